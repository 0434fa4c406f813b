"""`nnlab course prepare NAME DEST`: nnlab's copy of a dataset (here: tiny generated ones) in the platform's layout,
read back the way course scripts and nnlab's loaders read it."""

import csv

import numpy as np
import pytest
from data_fixtures import make_faces, make_split_tree
from PIL import Image
from tests_support import make_idx_dataset

from nnlab.data import load_dataset
from nnlab.data.idx import read_idx


@pytest.fixture
def prepare_cli(nnlab_cli, monkeypatch, tmp_path):
    """`nnlab course prepare ARGS` in this process, in tmp_path: (exit status, stdout, nnlab's stderr lines)."""
    monkeypatch.chdir(tmp_path)

    def call(*args: str):
        code, out, err = nnlab_cli("course", "prepare", *args)
        return code, out, [line for line in err.splitlines() if line.startswith("nnlab")]

    return call


def rows(images: np.ndarray) -> list[bytes]:
    return sorted(image.tobytes() for image in images)


def test_fashion_mnist_becomes_the_four_npy_files_of_the_idx_images(prepare_cli, tmp_path):
    source = make_idx_dataset(tmp_path / "idx", n_train=50, n_test=20)
    code, out, errors = prepare_cli("fashion_mnist", str(tmp_path / "fashion"), "--from", str(source))
    assert code == 0, errors
    assert "50 training and 20 test images as .npy files" in out
    path = str(tmp_path / "fashion") + "/"  # read the way course scripts build file names
    x_train, y_train = np.load(path + "train_features.npy"), np.load(path + "train_target.npy")
    x_test, y_test = np.load(path + "test_features.npy"), np.load(path + "test_target.npy")
    assert x_train.shape == (50, 28, 28) and x_train.dtype == np.uint8 and y_train.shape == (50,)
    assert np.array_equal(x_test, read_idx(source / "t10k-images-idx3-ubyte.gz"))  # the test set, in order
    assert np.array_equal(y_test, read_idx(source / "t10k-labels-idx1-ubyte.gz"))
    assert rows(x_train) == rows(read_idx(source / "train-images-idx3-ubyte.gz"))  # every training image, shuffled
    pairs = {image.tobytes(): label for image, label in zip(read_idx(source / "train-images-idx3-ubyte.gz"),
                                                            read_idx(source / "train-labels-idx1-ubyte.gz"))}
    assert all(pairs[image.tobytes()] == label for image, label in zip(x_train, y_train))


def test_limit_draws_a_training_subset_and_keeps_the_whole_test_set(prepare_cli, tmp_path):
    source = make_idx_dataset(tmp_path / "idx", n_train=50, n_test=20)
    assert prepare_cli("fashion_mnist", str(tmp_path / "small"), "--from", str(source), "--limit", "12")[0] == 0
    assert np.load(tmp_path / "small" / "train_features.npy").shape == (12, 28, 28)
    assert np.load(tmp_path / "small" / "test_target.npy").shape == (20,)


def test_fruits_become_one_folder_per_class_that_nnlabs_loader_reads(prepare_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    source = make_split_tree(tmp_path / "src", ["Kiwi", "Plum"], train=5, test=2, train_dir="Training",
                             test_dir="Test")
    code, out, errors = prepare_cli("fruits", str(tmp_path / "fruits"), "--from", str(source))
    assert code == 0, errors
    assert "14 photos in 2 class folders" in out
    kiwi = sorted(p.name for p in (tmp_path / "fruits" / "Kiwi").iterdir())
    assert kiwi[:2] == ["0000.png", "0001.png"] and len(kiwi) == 7
    assert "Test_0000.png" in kiwi  # a test photo whose name a training photo took: its tree's name in front
    assert Image.open(tmp_path / "fruits" / "Kiwi" / "Test_0001.png").tobytes() == \
        Image.open(source / "Test" / "Kiwi" / "0001.png").tobytes()
    data = load_dataset({"name": "image_folder", "path": str(tmp_path / "fruits"), "train_dir": ".", "test_dir": None,
                         "image_size": [12, 12], "test_split": 0.25, "val_split": 0.0}, seed=0)
    assert data.class_names == ["Kiwi", "Plum"] and len(data.train[0]) + len(data.test[0]) == 14


def test_faces_become_labels_csv_and_final_files(prepare_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    source = make_faces(tmp_path / "src", n=12)
    (source / "final_files" / "000003.jpg").unlink()  # a row naming a missing photo is left out
    code, _, errors = prepare_cli("faces", str(tmp_path / "faces"), "--from", str(source))
    assert code == 0, errors
    with open(tmp_path / "faces" / "labels.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["file_name", "real_age"] and len(table) == 11
    assert all((tmp_path / "faces" / "final_files" / row["file_name"]).is_file() for row in table)
    data = load_dataset({"name": "faces", "path": str(tmp_path / "faces"), "image_size": [24, 24]}, seed=0)
    assert sum(len(part[0]) for part in (data.train, data.val, data.test)) == 11


def test_the_default_source_is_the_dataset_presets_path_under_nnlab_data_dir(prepare_cli, tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "root" / "fashion-mnist", n_train=20, n_test=10)
    monkeypatch.setenv("NNLAB_DATA_DIR", str(tmp_path / "root"))
    assert prepare_cli("fashion_mnist", str(tmp_path / "fashion"))[0] == 0
    assert np.load(tmp_path / "fashion" / "test_features.npy").shape == (10, 28, 28)


def test_bad_requests_get_one_sentence_and_leave_no_partial_folder(prepare_cli, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, _, errors = prepare_cli("fashion_mnist", str(tmp_path / "full"))
    assert code == 2 and errors == [(f"nnlab: error: {tmp_path / 'full'} already exists and is not an empty "
                                     "folder; name a new folder for the layout.")]
    code, _, errors = prepare_cli("fruit", str(tmp_path / "new"))
    assert code == 2 and errors[0].endswith("did you mean 'fruits'?")
    code, _, errors = prepare_cli("faces", str(tmp_path / "new"), "--from", str(tmp_path / "nowhere"))
    assert code == 1 and len(errors) == 1 and f"{tmp_path / 'nowhere'} does not exist" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no DEST, no temporary folder left
