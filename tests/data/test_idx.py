import gzip

import numpy as np
import pytest

from nnlab.data import load_dataset
from nnlab.data.idx import FASHION_CLASSES, read_idx
from nnlab.errors import DataNotFoundError, NnlabError
from tests_support import make_idx_dataset, write_idx


def fashion(path, **kw):
    return load_dataset({"name": "fashion_mnist", "path": str(path), "limit": None, "val_split": 0.1,
                         "download": False, **kw}, seed=0)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_gzip_and_raw(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.gz" if compress else "a"), array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_rejects_a_truncated_file(tmp_path):
    path = write_idx(tmp_path / "a.gz", np.zeros((4, 5, 5), np.uint8))
    raw = gzip.decompress(path.read_bytes())[:-7]
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(NnlabError, match="truncated"):
        read_idx(path)


def test_read_idx_rejects_a_non_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(NnlabError, match="not an IDX file"):
        read_idx(path)


def test_fashion_mnist_loads_uint8_pixels_for_the_model_to_rescale_with_a_stratified_split(idx_dir):
    data = fashion(idx_dir)
    assert data.input_shape == (28, 28, 1)
    assert data.class_names == FASHION_CLASSES
    assert data.sizes() == {"train": 270, "val": 30, "test": 100}
    assert data.train[0].dtype == np.uint8 and data.train[0].max() == 250 and data.rescale == 1 / 255
    assert np.bincount(data.val[1], minlength=10).tolist() == [3] * 10
    again = fashion(idx_dir)
    assert np.array_equal(again.val[1], data.val[1])


def test_limit_caps_the_training_pool(idx_dir):
    data = fashion(idx_dir, limit=50)
    assert data.sizes()["train"] + data.sizes()["val"] == 50
    assert data.sizes()["test"] == 100


def test_uncompressed_files_are_found_too(tmp_path):
    make_idx_dataset(tmp_path, compress=False)
    assert fashion(tmp_path).sizes()["test"] == 100


def test_missing_files_name_each_file_and_the_folder(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        fashion(tmp_path / "nowhere")
    message = str(err.value)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", str(tmp_path / "nowhere")):
        assert name in message
    assert "\n" not in message


def test_a_failed_download_leaves_no_partial_file_and_explains(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="files are missing"):
        load_dataset({"name": "mnist", "path": str(tmp_path / "mnist"), "limit": None, "val_split": 0.1,
                      "download": True}, seed=0)
    assert list((tmp_path / "mnist").glob("*")) == []
