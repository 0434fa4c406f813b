"""MNIST-format datasets: the four IDX files (gzip or raw), as published by LeCun and Zalando."""

import gzip
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from nnlab.data import DATASETS, Data, split_train
from nnlab.errors import DataNotFoundError, NnlabError
from nnlab.files import fsync_dir

log = logging.getLogger(__name__)

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
URLS = {
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
}
# Debian's `dataset-fashion-mnist` package installs the files here.
SYSTEM_DIRS = {"fashion_mnist": ["/usr/share/datasets/fashion-mnist"]}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file: magic (0, 0, dtype, ndim), big-endian dims, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise NnlabError(f"Cannot read IDX file {path} ({err}); replace it with an intact copy.") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES:
        raise NnlabError(f"{path} is not an IDX file (bad magic number); replace it with an intact copy.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise NnlabError(f"{path} is truncated: its header promises {dims}; replace it with an intact copy.")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims)


def find_file(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
            if (d / name).is_file():
                return d / name
    return None


def download(url: str, stems: list[str], dest: Path) -> None:
    """Fetch the missing files into `dest`. Each one lands whole or not at all: it is written to a temporary file
    beside its target, checked (the length the server announced, an intact gzip stream), flushed to disk and
    renamed. A failure removes the temporary file, and `dest` too when this call created it and it is still
    empty; files fetched whole before the failure stay, so the next try fetches only the rest."""
    created = missing_dirs(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for stem in stems:
            fetch(url + stem + ".gz", dest / f"{stem}.gz")
    except BaseException:
        for folder in reversed(created):  # deepest first; a folder that holds a fetched file stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def missing_dirs(path: Path) -> list[Path]:
    """The folders `path.mkdir(parents=True)` would create, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def fetch(url: str, target: Path) -> None:
    log.info("downloading %s", url)
    tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False)
    try:
        with tmp:
            with urllib.request.urlopen(url, timeout=15) as resp:
                expected = resp.headers.get("Content-Length")
                shutil.copyfileobj(resp, tmp, 1 << 20)
            tmp.flush()
            if expected is not None and expected.isdigit() and tmp.tell() != int(expected):
                raise OSError(f"{url} ended after {tmp.tell()} of {expected} bytes")
            os.fsync(tmp.fileno())
        check_gzip(Path(tmp.name), url)
        os.replace(tmp.name, target)
    except (EOFError, http.client.HTTPException) as err:  # a cut connection: an OSError like the others
        Path(tmp.name).unlink(missing_ok=True)
        raise OSError(f"{url}: {type(err).__name__}: {err}") from err
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def check_gzip(path: Path, url: str) -> None:
    """Read the whole gzip stream: a cut download fails here, not in every later run."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise OSError(f"{url} is not an intact gzip file ({err})") from err


def load_idx_files(name: str, path: str | None, allow_download: bool) -> dict[str, np.ndarray]:
    if path is None:
        raise NnlabError(f"dataset.path is not set for '{name}'; set it or the NNLAB_DATA_DIR variable.")
    root = Path(path).expanduser()
    dirs = [root] + [Path(d) for d in SYSTEM_DIRS.get(name, [])]
    found = {key: find_file(stem, dirs) for key, stem in FILES.items()}
    missing = [FILES[key] for key, f in found.items() if f is None]
    if missing and allow_download and name in URLS:
        try:
            download(URLS[name], missing, root)
        except OSError as err:
            log.warning("download of %s failed: %s", name, err)
        found = {key: find_file(stem, dirs) for key, stem in FILES.items()}
        missing = [FILES[key] for key, f in found.items() if f is None]
    if missing:
        raise DataNotFoundError(
            f"{name} files are missing: put {', '.join(m + '.gz' for m in missing)} in {root} "
            f"(or point dataset.path / NNLAB_DATA_DIR at the folder that holds them)."
        )
    return {key: read_idx(f) for key, f in found.items()}


def idx_dataset(name: str, class_names: list[str], *, seed: int, path: str | None, limit: int | None,
                val_split: float, download: bool) -> Data:
    arrays = load_idx_files(name, path, download)
    x_train, x_test = (arrays[k][..., None] for k in ("x_train", "x_test"))  # uint8: the model rescales
    y_train, y_test = arrays["y_train"].astype("int64"), arrays["y_test"].astype("int64")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise NnlabError(f"{name} images and labels in {path} differ in count; replace the files with a matching set.")
    train, val = split_train(x_train, y_train, val_split=val_split, limit=limit, seed=seed, stratify=True)
    return Data(train, val, (x_test, y_test), "classification", class_names, rescale=1 / 255)


@DATASETS.register("fashion_mnist")
def fashion_mnist(*, seed: int, path: str | None, limit: int | None, val_split: float,
                  download: bool) -> Data:
    return idx_dataset("fashion_mnist", FASHION_CLASSES, seed=seed, path=path, limit=limit,
                       val_split=val_split, download=download)


@DATASETS.register("mnist")
def mnist(*, seed: int, path: str | None, limit: int | None, val_split: float,
          download: bool) -> Data:
    return idx_dataset("mnist", [str(i) for i in range(10)], seed=seed, path=path, limit=limit,
                       val_split=val_split, download=download)
