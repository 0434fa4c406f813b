import gzip
import io

import numpy as np
import pytest
from tests_support import make_idx_dataset, write_idx

import nnlab.data.idx as idx_module
from nnlab.data import load_dataset
from nnlab.data.idx import FASHION_CLASSES, read_idx
from nnlab.errors import DataNotFoundError, NnlabError


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


class Response(io.BytesIO):
    """What urllib.request.urlopen returns, serving `payload`; `fail_after`: the connection drops after that
    many bytes; `length`: the Content-Length the server announces."""

    def __init__(self, payload: bytes, fail_after: int | None = None, length: int | None = None):
        super().__init__(payload)
        self.fail_after = fail_after
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}

    def read(self, size=-1):
        if self.fail_after is None:
            return super().read(size)
        if self.tell() >= self.fail_after:
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(self.fail_after - self.tell())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def test_a_failed_download_leaves_no_partial_file_and_explains(tmp_path, monkeypatch):
    """The connection drops after some bytes were written into the data folder, which did not exist before."""
    import urllib.request

    written = []
    real_copy = idx_module.shutil.copyfileobj

    def copy(src, dst, *args):
        written.append(dst.name)
        return real_copy(src, dst, *args)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response(b"x" * 100000, 4096))
    monkeypatch.setattr(idx_module.shutil, "copyfileobj", copy)
    target = tmp_path / "data" / "mnist"
    with pytest.raises(DataNotFoundError, match="files are missing"):
        load_dataset({"name": "mnist", "path": str(target), "limit": None, "val_split": 0.1, "download": True},
                     seed=0)
    assert written and written[0].startswith(str(target))  # it had started writing into the folder
    assert list(tmp_path.iterdir()) == []  # neither the partial file nor the folders it made are left


def test_a_short_or_corrupt_download_is_not_kept(tmp_path, monkeypatch):
    import urllib.request

    payload = gzip.compress(bytes(5000))
    (tmp_path / "mnist").mkdir()
    for response in (lambda: Response(payload[: len(payload) // 2], length=len(payload)),  # short of its length
                     lambda: Response(payload[: len(payload) // 2])):  # no length to tell: a cut gzip stream
        monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: response())
        with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte.gz"):
            load_dataset({"name": "mnist", "path": str(tmp_path / "mnist"), "limit": None, "val_split": 0.1,
                          "download": True}, seed=0)
        assert list((tmp_path / "mnist").iterdir()) == []  # the folder was there before: it stays, empty


def test_files_fetched_whole_before_a_failure_stay_and_only_the_rest_is_named(tmp_path, monkeypatch):
    import urllib.request

    source = make_idx_dataset(tmp_path / "source")
    calls = []

    def serve_two(url, timeout=None):
        calls.append(url)
        if len(calls) > 2:
            raise OSError("network is unreachable")
        return Response((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", serve_two)
    target = tmp_path / "mnist"
    with pytest.raises(DataNotFoundError) as err:
        load_dataset({"name": "mnist", "path": str(target), "limit": None, "val_split": 0.1, "download": True},
                     seed=0)
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert "t10k-images-idx3-ubyte.gz" in str(err.value) and "train-images" not in str(err.value)
