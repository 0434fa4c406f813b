"""Segmentation datasets from files: your own `images/` + `masks/` folders, and the Oxford-IIIT Pet trimaps.

Images and masks pair up by file stem. Both are decoded once and cached like image folders (images.py); masks
are resized with nearest neighbour so that every pixel keeps a real class index. A file without its partner,
or one that cannot be read, is skipped and listed in `info["problems"]`, and counts toward max_bad_fraction.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnlab.data import DATASETS, Data, holdout, split_train
from nnlab.data.folders import UNREADABLE, limit_bad_share, require_dir, seeded_subset
from nnlab.data.image_cache import cached_decode
from nnlab.data.images import COLOR_MODES, MASK, is_image
from nnlab.errors import DataNotFoundError, NnlabError

log = logging.getLogger(__name__)

SEG_LAYOUT = ("<path>/images/<name>.jpg|png + <path>/masks/<name>.png, or both under <path>/train/ and "
              "<path>/test/")
PETS_LAYOUT = "<path>/images/*.jpg + <path>/annotations/trimaps/*.png (the Oxford-IIIT Pet archives, unpacked)"
PET_CLASSES = ["pet", "background", "border"]  # trimap values 1, 2, 3
UNREADABLE_MASK = "unreadable mask: "
NO_MASK = "image without a mask: "
NO_IMAGE = "mask without an image: "
Pairs = list[tuple[Path, Path]]  # (image, mask)


def pair_files(images_dir: Path, masks_dir: Path, problems: list[str]) -> Pairs:
    """Pairs by stem; names starting with '.' (macOS `._foo.png` metadata in the real archives) are not files."""
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.is_file() and is_image(p)}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir())
             if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")}
    problems += [f"{NO_MASK}{images[s]}" for s in sorted(images.keys() - masks.keys())]
    problems += [f"{NO_IMAGE}{masks[s]}" for s in sorted(masks.keys() - images.keys())]
    return [(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]


def split_pairs(pairs: Pairs, test_pairs: Pairs | None, test_split: float, limit: int | None,
                seed: int) -> tuple[Pairs, Pairs]:
    """Hold out the test pairs first, then draw at most `limit` training pairs: all before any decoding."""
    if test_pairs is None:
        index = np.arange(len(pairs))
        (pool, _), (test, _) = holdout(index, index, test_split=test_split, seed=seed, stratify=False)
        pairs, test_pairs = [pairs[i] for i in np.sort(pool)], [pairs[i] for i in np.sort(test)]
    keep = seeded_subset(np.zeros(len(pairs)), limit, seed)
    return [pairs[i] for i in keep], test_pairs


def decode_pairs(pairs: Pairs, settings: dict, problems: list[str]) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """x (n, H, W, C) and raw masks (n, H, W) of the pairs whose two files both decode, and those masks' files."""
    files = [p[0] for p in pairs], [p[1] for p in pairs]
    common = {"cache_dir": settings["cache_dir"], "max_pixels": settings["max_pixels"]}
    images = cached_decode(files[0], settings["size"], settings["color_mode"], False, **common)
    masks = cached_decode(files[1], settings["size"], MASK, False, **common)
    problems += [f"{UNREADABLE}{f} ({reason})" for f, reason in images.bad]
    problems += [f"{UNREADABLE_MASK}{f} ({reason})" for f, reason in masks.bad]
    both = np.intersect1d(images.good, masks.good)
    x = np.asarray(images.images[np.searchsorted(images.good, both)])
    y = np.asarray(masks.images[np.searchsorted(masks.good, both), ..., 0])
    return x, y, [files[1][i] for i in both]


def first_bad(present: np.ndarray, masks: list[np.ndarray], files: list[list[Path]],
              lut: np.ndarray) -> tuple[Path, int] | None:
    """The first mask file holding a value the lookup table marks invalid (-1), and that value; the search
    over the pixels runs only when some value is invalid."""
    invalid = present[lut[present] < 0]
    for y, names in zip(masks, files):
        rows = np.flatnonzero(np.isin(y, invalid).any(axis=(1, 2))) if len(invalid) else []
        if len(rows):
            values = np.unique(y[rows[0]])
            return names[rows[0]], int(values[lut[values] < 0][0])
    return None


def load_pairs(train: Pairs, test: Pairs | None, problems: list[str], *, seed: int, where: Path,
               settings: dict, limit: int | None, val_split: float, test_split: float, max_bad_fraction: float,
               classes: Callable[[np.ndarray, list[np.ndarray], list[list[Path]]], tuple[np.ndarray, list[str]]]):
    """The shared pipeline: split by file, decode, check the skipped share, map mask values to class indices."""
    if len(train) + len(test or []) < 2:
        raise DataNotFoundError(f"Found {len(train) + len(test or [])} image/mask pairs under {where}; a "
                                "segmentation set needs at least 2, with masks named like their images.")
    train, test = split_pairs(train, test, test_split, limit, seed)
    total = len(problems) + len(train) + len(test)  # unpaired files, and the pairs about to be decoded
    (x, y, y_files), (x_test, y_test, test_files) = (decode_pairs(p, settings, problems) for p in (train, test))
    limit_bad_share(problems, total, max_bad_fraction, where, "image/mask files",
                    "cannot be read or lack their partner")
    present = np.flatnonzero(np.bincount(y.ravel(), minlength=256) + np.bincount(y_test.ravel(), minlength=256))
    lut, names = classes(present, [y, y_test], [y_files, test_files])
    lut = lut.astype(np.uint8)
    train_split, val = split_train(x, lut[y], val_split=val_split, limit=None, seed=seed, stratify=False)
    counts = {prefix: sum(p.startswith(prefix) for p in problems) for prefix in (UNREADABLE, UNREADABLE_MASK,
                                                                                   NO_MASK, NO_IMAGE)}
    info = {"skipped_images": counts[UNREADABLE], "skipped_masks": counts[UNREADABLE_MASK],
            "missing_masks": counts[NO_MASK], "missing_images": counts[NO_IMAGE], "problems": problems}
    return Data(train_split, val, (x_test, lut[y_test]), "segmentation", names, rescale=1 / 255, info=info)


def folder_classes(wanted: list[str] | None):
    """Mask values -> class indices for your own masks: 0/255 means two classes; otherwise the values are the
    indices, and must be below the number of classes named."""

    def classes(present: np.ndarray, masks: list[np.ndarray], files: list[list[Path]]):
        lut = np.full(256, -1, np.int64)
        if 255 in present and set(present.tolist()) <= {0, 1, 255} and (wanted is None or len(wanted) == 2):
            lut[[0, 1, 255]] = [0, 1, 1]
            return lut, list(wanted or ["background", "foreground"])
        names = list(wanted) if wanted else [str(k) for k in range(int(present.max(initial=0)) + 1)]
        lut[: len(names)] = np.arange(min(len(names), 256))
        bad = first_bad(present, masks, files, lut)
        if bad:
            raise NnlabError(f"Mask {bad[0]} has value {bad[1]}, but dataset.classes names {len(names)} classes "
                             f"(0-{len(names) - 1}); fix the mask or list more classes.")
        return lut, names

    return classes


def pet_classes(present: np.ndarray, masks: list[np.ndarray], files: list[list[Path]]):
    lut = np.full(256, -1, np.int64)
    lut[[1, 2, 3]] = [0, 1, 2]
    bad = first_bad(present, masks, files, lut)
    if bad:
        raise NnlabError(f"Trimap {bad[0]} has value {bad[1]}, but Oxford-IIIT Pet trimaps hold only 1 (pet), "
                         "2 (background) and 3 (border); replace it with the file from annotations.tar.gz.")
    return lut, list(PET_CLASSES)


def check_color_mode(color_mode: str) -> None:
    if color_mode not in COLOR_MODES:
        raise NnlabError(f"dataset.color_mode={color_mode!r} is not one of {sorted(COLOR_MODES)}; "
                         "set it to one of those.")


@DATASETS.register("segmentation_folder")
def segmentation_folder(
    *, seed: int, path: str | None, limit: int | None, val_split: float, test_split: float,
    classes: list[str] | None, image_size: list[int], color_mode: str, max_bad_fraction: float,
    cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """`path/images` + `path/masks` (PNG class indices, or 0/255), under `path/train` and `path/test` or
    directly under `path` with a seeded `test_split` held out."""
    root = require_dir(path, SEG_LAYOUT)
    check_color_mode(color_mode)
    train_root = root / "train" if (root / "train" / "images").is_dir() else root
    test_root = root / "test" if train_root != root and (root / "test" / "images").is_dir() else None
    for folder in [train_root, test_root] if test_root else [train_root]:
        if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
            raise DataNotFoundError(f"{folder} has no images/ and masks/ folders; expected {SEG_LAYOUT}.")
    problems: list[str] = []
    train = pair_files(train_root / "images", train_root / "masks", problems)
    test = pair_files(test_root / "images", test_root / "masks", problems) if test_root else None
    settings = {"size": tuple(image_size), "color_mode": color_mode, "cache_dir": cache_dir,
                "max_pixels": max_image_pixels}
    return load_pairs(train, test, problems, seed=seed, where=root, settings=settings, limit=limit,
                      val_split=val_split, test_split=test_split, max_bad_fraction=max_bad_fraction,
                      classes=folder_classes(classes))


@DATASETS.register("oxford_pets")
def oxford_pets(
    *, seed: int, path: str | None, limit: int | None, val_split: float, test_split: float,
    image_size: list[int], max_bad_fraction: float, cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """The Oxford-IIIT Pet photos and trimaps (1 pet, 2 background, 3 border -> classes 0, 1, 2), as in the
    keras-io U-Net example; a seeded `test_split` is held out."""
    root = require_dir(path, PETS_LAYOUT)
    images, trimaps = root / "images", root / "annotations" / "trimaps"
    if not images.is_dir() or not trimaps.is_dir():
        raise DataNotFoundError(f"No Oxford-IIIT Pet data in {root} ({images if not images.is_dir() else trimaps} "
                                f"is missing); expected {PETS_LAYOUT}.")
    problems: list[str] = []
    pairs = pair_files(images, trimaps, problems)
    settings = {"size": tuple(image_size), "color_mode": "rgb", "cache_dir": cache_dir,
                "max_pixels": max_image_pixels}
    return load_pairs(pairs, None, problems, seed=seed, where=root, settings=settings, limit=limit,
                      val_split=val_split, test_split=test_split, max_bad_fraction=max_bad_fraction,
                      classes=pet_classes)
