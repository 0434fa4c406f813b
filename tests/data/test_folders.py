import numpy as np
import pytest
from data_fixtures import corrupt, make_cifar_pickles, make_faces, make_image_tree, make_split_tree
from tests_support import make_idx_dataset

from nnlab.data import load_dataset
from nnlab.data.folders import CIFAR_CLASSES
from nnlab.errors import DataNotFoundError, NnlabError

CLASSES = ["cat", "dog", "fox"]


def load(name, path, cache=None, **kw):
    return load_dataset({"name": name, "path": str(path), "cache_dir": str(cache) if cache else None, **kw}, seed=0)


def test_image_folder_reads_train_and_test_class_folders(tmp_path):
    root = make_split_tree(tmp_path / "pets", CLASSES, train=10, test=4)
    data = load("image_folder", root, image_size=[16, 16], val_split=0.2)
    assert data.class_names == CLASSES and data.task == "classification"
    assert data.sizes() == {"train": 24, "val": 6, "test": 12}
    assert data.input_shape == (16, 16, 3) and data.train[0].dtype == np.uint8 and data.rescale == 1 / 255
    assert sorted(np.bincount(data.test[1]).tolist()) == [4, 4, 4]
    # each class has its own colour: the labels must follow the folders
    red = data.test[0][data.test[1] == 0].mean(axis=(0, 1, 2))
    assert red[0] > 150 and red[1] < 100


def test_image_folder_without_a_test_folder_holds_out_a_stratified_split(tmp_path):
    root = make_image_tree(tmp_path / "flat", CLASSES, 10)
    data = load("image_folder", root, image_size=[8, 8], test_split=0.3, val_split=0.0)
    assert data.sizes() == {"train": 21, "val": 0, "test": 9}
    assert np.bincount(data.test[1]).tolist() == [3, 3, 3]


def test_more_train_dirs_pool_every_photo_and_hold_out_a_split(tmp_path):
    root = make_split_tree(tmp_path / "cifar", CLASSES, train=10, test=6)
    data = load("image_folder", root, image_size=[8, 8], more_train_dirs=["test"], test_dir=None,
                test_split=0.25, val_split=0.0)
    assert data.sizes() == {"train": 36, "val": 0, "test": 12}  # (10 + 6) x 3 photos, a quarter held out
    assert np.bincount(data.test[1]).tolist() == [4, 4, 4]


def test_more_train_dirs_refuse_the_test_folder_and_name_missing_ones(tmp_path):
    root = make_split_tree(tmp_path / "cifar", CLASSES, train=2, test=1)
    with pytest.raises(NnlabError, match="test set would also be trained on.*test_dir=null"):
        load("image_folder", root, more_train_dirs=["test"])
    with pytest.raises(DataNotFoundError, match=r"\['extra'\], which are not folders"):
        load("image_folder", root, more_train_dirs=["extra"], test_dir=None)


def test_fruits_layout_and_a_subset_of_classes(tmp_path):
    root = make_split_tree(tmp_path / "fruits", ["Apricot", "Kiwi", "Plum"], 6, 2, train_dir="Training",
                           test_dir="Test", fmt="jpg", size=(20, 20))
    data = load("fruits", root, train_dir="Training", test_dir="Test", image_size=[10, 10],
                classes=["Plum", "Kiwi"], val_split=0.0)
    assert data.class_names == ["Plum", "Kiwi"] and data.sizes() == {"train": 12, "val": 0, "test": 4}


def test_unknown_class_names_list_the_folders(tmp_path):
    root = make_split_tree(tmp_path / "f", CLASSES, 2, 1)
    with pytest.raises(DataNotFoundError, match=r"\['wolf'\].*cat, dog, fox"):
        load("image_folder", root, classes=["cat", "wolf"])


def test_hotdog_binary_layout_with_mixed_modes_and_sizes(tmp_path):
    root = make_split_tree(tmp_path / "hotdog", ["hot_dog", "not_hot_dog"], 6, 3, fmt="png",
                           size=(30, 17), modes=("RGB", "RGBA", "L"))
    data = load("hotdog", root, image_size=[16, 16], crop_to_aspect_ratio=True, val_split=0.0)
    assert data.num_classes == 2 and data.train[0].shape == (12, 16, 16, 3)


def test_empty_class_folders_are_skipped_and_reported(tmp_path):
    root = make_split_tree(tmp_path / "f", CLASSES, 4, 2)
    (root / "train" / "empty").mkdir()
    (root / "train" / "notes").mkdir()
    (root / "train" / "notes" / "readme.txt").write_text("not an image")
    data = load("image_folder", root, image_size=[8, 8], val_split=0.0)
    assert data.class_names == CLASSES
    assert data.info["empty_classes"] == 2
    assert "empty class folder: empty" in data.info["problems"]


def test_corrupt_images_are_skipped_counted_and_listed(tmp_path):
    root = make_split_tree(tmp_path / "f", CLASSES, 20, 5, fmt="jpg", size=(16, 16))
    broken = corrupt(root / "train" / "dog" / "0003.jpg")
    data = load("image_folder", root, image_size=[8, 8], val_split=0.0, max_bad_fraction=0.05)
    assert data.info["skipped_images"] == 1 and len(data.train[0]) == 59
    assert np.bincount(data.train[1]).tolist() == [20, 19, 20]  # labels stay aligned with the images
    assert any(str(broken) in p for p in data.info["problems"])


def test_too_many_corrupt_images_fail_with_one_sentence(tmp_path):
    root = make_split_tree(tmp_path / "f", CLASSES, 4, 1, fmt="png")
    for f in list((root / "train" / "cat").iterdir())[:3]:
        corrupt(f, "truncated")
    with pytest.raises(NnlabError, match=r"3 of 15 images .* cannot be read .*max_bad_fraction=0.01"):
        load("image_folder", root, image_size=[8, 8])


def test_missing_folder_names_the_path_and_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"nowhere does not exist; put the data there as <path>/train/<class>"):
        load("image_folder", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="No images found"):
        load("image_folder", tmp_path / "empty")


def test_limit_decodes_only_a_seeded_subset_and_it_is_cached(tmp_path):
    root = make_split_tree(tmp_path / "f", CLASSES, 10, 2)
    cache = tmp_path / "cache"
    a = load("image_folder", root, cache, image_size=[8, 8], limit=9, val_split=0.0)
    b = load("image_folder", root, cache, image_size=[8, 8], limit=9, val_split=0.0)
    assert len(a.train[0]) == 9 and np.array_equal(a.train[0], b.train[0]) and np.array_equal(a.train[1], b.train[1])
    assert len(list(cache.glob("*.npy"))) == 2  # the 9 training files, and the test split


def test_cifar10_reads_the_python_pickles(tmp_path):
    root = make_cifar_pickles(tmp_path / "cifar", per_batch=20, batches=2)
    data = load("cifar10", root, val_split=0.1)
    assert data.class_names == CIFAR_CLASSES and data.input_shape == (32, 32, 3)
    assert data.sizes() == {"train": 36, "val": 4, "test": 20}
    # channel planes must land in the right place: class 0 is red
    red = data.test[0][data.test[1] == 0].mean(axis=(0, 1, 2))
    assert red[0] > 150 and red[2] < 100
    assert load("cifar10", root / "cifar-10-batches-py", val_split=0.1).sizes() == data.sizes()


def test_cifar10_reads_class_folders_and_explains_a_missing_copy(tmp_path):
    root = make_split_tree(tmp_path / "cifar", CIFAR_CLASSES, 2, 1, size=(32, 32))
    data = load("cifar10", root, val_split=0.0)
    assert data.class_names == CIFAR_CLASSES and data.sizes()["test"] == 10
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load("cifar10", tmp_path / "nothing")


def test_notmnist_idx_copy_with_one_split_gets_a_seeded_holdout(tmp_path):
    root = make_idx_dataset(tmp_path / "notmnist", n_train=100, n_test=200)
    for f in root.glob("train-*"):
        f.unlink()
    data = load("notmnist", root, val_split=0.0, test_split=0.2)
    assert data.class_names == list("ABCDEFGHIJ") and data.sizes() == {"train": 160, "val": 0, "test": 40}
    assert np.bincount(data.test[1]).tolist() == [4] * 10
    again = load("notmnist", root, val_split=0.0, test_split=0.2)
    assert np.array_equal(data.test[0], again.test[0])


def test_notmnist_class_folders_skip_the_broken_pngs(tmp_path):
    root = make_image_tree(tmp_path / "notMNIST_small", list("ABCDEFGHIJ"), 10, size=(28, 28), modes=("L",))
    corrupt(root / "A" / "0001.png", "empty")
    data = load("notmnist", tmp_path, val_split=0.0)
    assert data.input_shape == (28, 28, 1) and data.info["skipped_images"] == 1
    assert data.sizes()["train"] + data.sizes()["test"] == 99


def test_faces_reads_labels_csv_and_reports_rows_without_an_image(tmp_path):
    root = make_faces(tmp_path / "faces", n=40)
    (root / "final_files" / "000005.jpg").unlink()
    data = load("faces", root, image_size=[12, 12], val_split=0.0, test_split=0.25)
    assert data.task == "regression" and data.class_names is None
    assert data.sizes() == {"train": 29, "val": 0, "test": 10}
    assert data.info["missing_label_files"] == 1
    assert any("000005.jpg" in p for p in data.info["problems"])
    # brightness encodes the age: the targets must stay attached to their images
    assert np.corrcoef(data.train[0].mean(axis=(1, 2, 3)), data.train[1])[0, 1] > 0.99
    assert np.allclose(data.baselines["train_mean"], data.train[1].mean())  # what the regressor must beat
    assert len(data.baselines["train_mean"]) == 10


def test_faces_bad_table_is_one_sentence(tmp_path):
    root = make_faces(tmp_path / "faces", n=4)
    (root / "labels.csv").write_text("file,age\n000000.jpg,3\n")
    with pytest.raises(NnlabError, match="not 'file_name' and 'real_age'; set dataset.file_column"):
        load("faces", root)
    (root / "labels.csv").write_text("file_name,real_age\n000000.jpg,three\n")
    with pytest.raises(NnlabError, match="line 2: real_age='three' is not a number"):
        load("faces", root)
    (root / "labels.csv").unlink()
    with pytest.raises(DataNotFoundError, match="labels.csv is missing"):
        load("faces", root)


def cached_lengths(cache) -> list[int]:
    return sorted(len(np.load(f, mmap_mode="r")) for f in cache.glob("*.npy"))


def test_image_folder_limit_caps_the_training_pool_but_never_the_held_out_test_set(tmp_path):
    root = make_image_tree(tmp_path / "flat", CLASSES, 10)
    options = {"image_size": [8, 8], "test_dir": None, "test_split": 0.3, "val_split": 0.2}
    full = load("image_folder", root, **options)
    small = load("image_folder", root, tmp_path / "cache", limit=6, **options)
    assert full.sizes()["test"] == small.sizes()["test"] == 9 and np.bincount(small.test[1]).tolist() == [3, 3, 3]
    assert np.array_equal(full.test[0], small.test[0]) and np.array_equal(full.test[1], small.test[1])
    assert small.sizes()["train"] + small.sizes()["val"] == 6 and full.sizes()["train"] + full.sizes()["val"] == 21
    assert cached_lengths(tmp_path / "cache") == [6, 9]  # only the kept training files and the test files decoded


def test_faces_limit_caps_the_training_pool_but_never_the_test_set(tmp_path):
    root = make_faces(tmp_path / "faces", n=40)
    options = {"image_size": [12, 12], "test_split": 0.25, "val_split": 0.25}
    full = load("faces", root, **options)
    small = load("faces", root, tmp_path / "cache", limit=8, **options)
    assert full.sizes()["test"] == small.sizes()["test"] == 10
    assert np.array_equal(full.test[0], small.test[0]) and np.array_equal(full.test[1], small.test[1])
    assert small.sizes()["train"] + small.sizes()["val"] == 8 and full.sizes()["train"] + full.sizes()["val"] == 30
    assert cached_lengths(tmp_path / "cache") == [8, 10]
