"""Image datasets as people download them: class-folder trees, a labels.csv beside an image folder, and the
CIFAR-10 python pickles. Pixels stay uint8 (a quarter of float32's memory); the model rescales them.

`fruits` (Fruits-360 `Training/`, `Test/`) and `hotdog` (`train/`, `test/` with `hot_dog/`, `not_hot_dog/`)
are `image_folder` with their layout's defaults in `conf/dataset/`.
"""

import csv
import logging
import pickle
from pathlib import Path

import numpy as np

from nnlab.data import DATASETS, Data, holdout, load_dataset, split_train
from nnlab.data.idx import FILES, find_file, read_idx
from nnlab.data.image_cache import cached_decode
from nnlab.data.images import is_image
from nnlab.errors import DataNotFoundError, NnlabError

log = logging.getLogger(__name__)

UNREADABLE = "unreadable image: "
FOLDER_LAYOUT = "<path>/{train}/<class>/*.jpg|png (and optionally <path>/{test}/<class>/…)"


def require_dir(path: str | None, layout: str) -> Path:
    if path is None:
        raise NnlabError(f"dataset.path is not set; set it (or NNLAB_DATA_DIR) to the folder laid out as {layout}.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"Dataset folder {root} does not exist; put the data there as {layout}, "
                                "or point dataset.path / NNLAB_DATA_DIR at it.")
    return root


def class_files(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for k, name in enumerate(classes):
        folder = root / name
        found = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p)) if folder.is_dir() else []
        files += found
        labels += [k] * len(found)
    return files, np.asarray(labels, np.int64)


def find_classes(roots: list[Path], wanted: list[str] | None) -> tuple[list[str], list[str]]:
    """Class names (sorted subfolder names, or `wanted`), and the folders skipped because they hold no image."""
    present = sorted({d.name for r in roots for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")})
    if wanted:
        missing = [c for c in wanted if c not in present]
        if missing:
            raise DataNotFoundError(f"dataset.classes names {missing}, which are not folders under {roots[0]}; "
                                    f"the class folders there are: {', '.join(present) or 'none'}.")
        present = list(wanted)
    empty = [c for c in present if not any(is_image(p) for r in roots if (r / c).is_dir() for p in (r / c).iterdir())]
    for c in empty:
        log.warning("class folder '%s' holds no images: skipped", c)
    classes = [c for c in present if c not in empty]
    if not classes:
        raise DataNotFoundError(f"No images found in class folders under {roots[0]}; expected "
                                f"{roots[0]}/<class>/<image files> (jpg, png, …), one folder per class.")
    return classes, empty


def seeded_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most `limit` files, drawn before decoding so a smoke run decodes only what it uses."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.sort(order[: max(int(limit), 2)]) if limit is not None else np.arange(len(labels))


def decode_split(files: list[Path], labels: np.ndarray, settings: dict, problems: list[str]):
    decoded = cached_decode(files, **settings)
    problems += [f"{UNREADABLE}{f} ({reason})" for f, reason in decoded.bad]
    return np.asarray(decoded.images), labels[decoded.good]


@DATASETS.register("fruits")
@DATASETS.register("hotdog")
@DATASETS.register("image_folder")
def image_folder(
    *, seed: int, path: str | None, train_dir: str, test_dir: str | None,
    more_train_dirs: list[str], classes: list[str] | None, image_size: list[int],
    color_mode: str, crop_to_aspect_ratio: bool, limit: int | None, val_split: float,
    test_split: float, max_bad_fraction: float, cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """Class folders under `path/train_dir` (or `path` itself) and `path/<more_train_dirs>`; the test set is
    `path/test_dir` when that exists, else a seeded stratified `test_split` of the rest."""
    layout = FOLDER_LAYOUT.format(train=train_dir, test=test_dir or "test")
    root = require_dir(path, layout)
    train_root = root / train_dir if (root / train_dir).is_dir() else root
    test_root = root / test_dir if test_dir and (root / test_dir).is_dir() else None
    extra = extra_roots(root, more_train_dirs, test_dir if test_root else None)
    names, empty = find_classes([train_root, *extra] + ([test_root] if test_root else []), classes)
    settings = {"size": tuple(image_size), "color_mode": color_mode, "crop": crop_to_aspect_ratio,
                "cache_dir": cache_dir, "max_pixels": max_image_pixels}
    problems = [f"empty class folder: {c}" for c in empty]
    parts = [class_files(r, names) for r in (train_root, *extra)]
    files, labels = [f for part in parts for f in part[0]], np.concatenate([part[1] for part in parts])
    if test_root is not None:
        test_files, test_labels = class_files(test_root, names)
    else:  # hold out the test files (stratified, by index) before `limit` and decoding: limit never shrinks them
        (pool, _), (held, _) = holdout(np.arange(len(files)), labels, test_split=test_split, seed=seed, stratify=True)
        test_files, test_labels = [files[i] for i in held], labels[held]
        files, labels = [files[i] for i in pool], labels[pool]
    keep = seeded_subset(labels, limit, seed)
    x, y = decode_split([files[i] for i in keep], labels[keep], settings, problems)
    test = decode_split(test_files, test_labels, settings, problems)
    bad = check_bad_share(problems, len(keep) + len(test_files), max_bad_fraction, root)
    train, val = split_train(x, y, val_split=val_split, limit=None, seed=seed, stratify=True)
    info = {"skipped_images": bad, "empty_classes": len(empty), "problems": problems}
    return Data(train, val, test, "classification", names, rescale=1 / 255, info=info)


def extra_roots(root: Path, dirs: list[str], test_dir: str | None) -> list[Path]:
    """More training trees (e.g. a copy's test/ to pretrain a backbone on every photo it has)."""
    if test_dir in dirs:
        raise NnlabError(f"dataset.more_train_dirs includes the test folder '{test_dir}', so the test set would "
                         "also be trained on; set dataset.test_dir=null to hold out dataset.test_split instead.")
    missing = [d for d in dirs if not (root / d).is_dir()]
    if missing:
        raise DataNotFoundError(f"dataset.more_train_dirs names {missing}, which are not folders under {root}; "
                                "remove them or create them as <class>/<image> trees.")
    return [root / d for d in dirs]


@DATASETS.register("faces")
def faces(
    *, seed: int, path: str | None, labels_file: str, images_dir: str,
    file_column: str, target_column: str, image_size: list[int],
    limit: int | None, val_split: float, test_split: float, max_bad_fraction: float,
    cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """Regression from photos: `labels.csv` (file_name, real_age) plus the images in `final_files/`."""
    layout = f"<path>/{labels_file} (columns {file_column},{target_column}) and <path>/{images_dir}/<images>"
    root = require_dir(path, layout)
    table, folder = root / labels_file, root / images_dir
    if not table.is_file() or not folder.is_dir():
        raise DataNotFoundError(f"{table if not table.is_file() else folder} is missing; expected {layout}.")
    names, targets = read_labels(table, file_column, target_column)
    exists = np.array([(folder / n).is_file() for n in names], bool)
    problems = [f"{labels_file} row names a missing image: {n}" for n, ok in zip(names, exists) if not ok]
    if problems:
        log.warning("%d rows of %s name images missing from %s (first: %s): skipped",
                    len(problems), table, folder, problems[0].rsplit(": ", 1)[-1])
    files = [folder / n for n, ok in zip(names, exists) if ok]
    targets = targets[exists]
    if len(files) < 2:
        raise DataNotFoundError(f"{len(files)} of the {len(names)} images that {table} names are in {folder}; put "
                                f"the images there (or fix dataset.images_dir / dataset.file_column).")
    # The test rows are held out (by index) before `limit` and decoding, so a limit never shrinks the test set.
    (pool, _), (held, _) = holdout(np.arange(len(files)), targets, test_split=test_split, seed=seed, stratify=False)
    keep = pool[seeded_subset(targets[pool], limit, seed)]
    settings = {"size": tuple(image_size), "color_mode": "rgb", "crop": False, "cache_dir": cache_dir,
                "max_pixels": max_image_pixels}
    x, y = decode_split([files[i] for i in keep], targets[keep], settings, problems)
    test = decode_split([files[i] for i in held], targets[held], settings, problems)
    bad = check_bad_share(problems, len(keep) + len(held), max_bad_fraction, folder)
    train, val = split_train(x, y, val_split=val_split, limit=None, seed=seed, stratify=False)
    info = {"skipped_images": bad, "missing_label_files": int((~exists).sum()), "problems": problems}
    mean_age = np.full(len(test[1]), train[1].mean(), np.float32)  # the "no model" guess MAE is judged against
    return Data(train, val, test, "regression", None, rescale=1 / 255, info=info, baselines={"train_mean": mean_age})


def read_labels(table: Path, file_column: str, target_column: str) -> tuple[list[str], np.ndarray]:
    with open(table, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if file_column not in columns or target_column not in columns:
            raise NnlabError(f"{table} has columns {columns}, not '{file_column}' and '{target_column}'; "
                             "set dataset.file_column / dataset.target_column to its names.")
        names, targets = [], []
        for line, row in enumerate(reader, start=2):
            try:
                targets.append(float(row[target_column]))
            except (TypeError, ValueError):
                raise NnlabError(f"{table} line {line}: {target_column}={row[target_column]!r} is not a number; "
                                 "fix or delete that row.") from None
            names.append(row[file_column])
    return names, np.asarray(targets, np.float32)


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_cifar_pickles(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(folder / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")  # the official format; read only from your own data folder
            x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            return x, np.asarray(d[b"labels"], np.int64)
        except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
            raise NnlabError(f"Cannot read CIFAR-10 batch {folder / name} ({err}); replace it with an intact "
                             "copy from cifar-10-python.tar.gz.") from err

    parts = [batch(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])), batch("test_batch")


@DATASETS.register("cifar10")
def cifar10(
    *, seed: int, path: str | None, limit: int | None, val_split: float,
    max_bad_fraction: float, cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """`cifar-10-batches-py/` (data_batch_1..5, test_batch) under or at `path`, else `train/` and `test/`
    class folders of 32x32 images."""
    layout = ("<path>/cifar-10-batches-py/{data_batch_1..5,test_batch} or "
              "<path>/train/<class>/*.png and <path>/test/<class>/*.png")
    root = require_dir(path, layout)
    pickles = next((d for d in (root, root / "cifar-10-batches-py") if (d / "test_batch").is_file()), None)
    if pickles is None:
        if not (root / "train").is_dir():
            raise DataNotFoundError(f"No CIFAR-10 data in {root}; expected {layout}.")
        return load_dataset({"name": "image_folder", "path": str(root), "image_size": [32, 32], "limit": limit,
                             "val_split": val_split, "max_bad_fraction": max_bad_fraction, "cache_dir": cache_dir,
                             "max_image_pixels": max_image_pixels}, seed=seed)
    (x, y), test = read_cifar_pickles(pickles)
    keep = seeded_subset(y, limit, seed)
    train, val = split_train(x[keep], y[keep], val_split=val_split, limit=None, seed=seed, stratify=True)
    return Data(train, val, test, "classification", CIFAR_CLASSES, rescale=1 / 255)


def check_bad_share(problems: list[str], total: int, max_bad_fraction: float, where: Path) -> int:
    """Log the unreadable files; fail when more than the allowed share could not be read. Returns their count."""
    bad = [p.removeprefix(UNREADABLE) for p in problems if p.startswith(UNREADABLE)]
    return limit_bad_share(bad, total, max_bad_fraction, where, "images", "cannot be read")


def limit_bad_share(bad: list[str], total: int, max_bad_fraction: float, where: Path, what: str, why: str) -> int:
    """Log the skipped files; fail when more than the allowed share of `what` was skipped. Returns their count."""
    for line in bad[:5]:
        log.warning("skipped %s", line)
    share = len(bad) / max(total, 1)
    if bad:
        log.warning("skipped %d of %d %s under %s (%.2f%%)", len(bad), total, what, where, 100 * share)
    if share > max_bad_fraction:
        raise NnlabError(
            f"{len(bad)} of {total} {what} under {where} {why} ({100 * share:.1f}% > "
            f"dataset.max_bad_fraction={max_bad_fraction}); first: {bad[0]}. Replace or delete the broken "
            "files, or raise dataset.max_bad_fraction."
        )
    return len(bad)


NOTMNIST_CLASSES = list("ABCDEFGHIJ")


@DATASETS.register("notmnist")
def notmnist(
    *, seed: int, path: str | None, limit: int | None, val_split: float,
    test_split: float, max_bad_fraction: float, cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """notMNIST letters A-J: the IDX copy (t10k-* alone gets a seeded stratified `test_split`), or the
    notMNIST_small/large class folders of 28x28 PNGs (which hold a few broken files, skipped)."""
    layout = ("<path>/t10k-images-idx3-ubyte.gz + t10k-labels-idx1-ubyte.gz (train-* too, if you have them) "
              "or <path>/A/*.png … <path>/J/*.png (notMNIST_small or notMNIST_large)")
    root = require_dir(path, layout)
    found = {key: find_file(stem, [root]) for key, stem in FILES.items()}
    if found["x_test"] and found["y_test"]:
        arrays = {key: read_idx(f) for key, f in found.items() if f is not None}
        x, y = arrays["x_test"][..., None], arrays["y_test"].astype(np.int64)
        if "x_train" in arrays and "y_train" in arrays:
            pool, test = (arrays["x_train"][..., None], arrays["y_train"].astype(np.int64)), (x, y)
        else:
            pool, test = holdout(x, y, test_split=test_split, seed=seed, stratify=True)
        keep = seeded_subset(pool[1], limit, seed)
        train, val = split_train(pool[0][keep], pool[1][keep], val_split=val_split, limit=None, seed=seed,
                                 stratify=True)
        return Data(train, val, test, "classification", NOTMNIST_CLASSES, rescale=1 / 255)
    folders = next((d for d in (root, root / "notMNIST_small", root / "notMNIST_large") if (d / "A").is_dir()), None)
    if folders is None:
        raise DataNotFoundError(f"No notMNIST data in {root}; expected {layout}.")
    return load_dataset({"name": "image_folder", "path": str(folders), "test_dir": None, "image_size": [28, 28],
                         "color_mode": "grayscale", "limit": limit, "val_split": val_split, "test_split": test_split,
                         "max_bad_fraction": max_bad_fraction, "cache_dir": cache_dir,
                         "max_image_pixels": max_image_pixels}, seed=seed)
