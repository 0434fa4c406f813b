"""Decode image files into one uint8 array (the cache of decoded arrays is `image_cache`).

Decoding is the slow part of every image lab (JPEG → pixels → resize), and it gives the same answer every
epoch and every run, so `image_cache` keeps its result on disk for later runs. Files that OpenCV decodes to
Pillow's pixels (`opencv_decode`: small JPEGs and PNGs, most lab datasets) are decoded in one thread a core, as
OpenCV releases the GIL. Others go to Pillow, which holds it: a list of `POOL_MIN_FILES` files or more is decoded
by this process and a worker process for each further core (`decode_pool`), a shorter one in threads of this
process, where starting workers would cost more than they save. Unreadable files are skipped and reported,
never silently dropped: the caller decides whether too many were bad.
"""
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nnlab.data import opencv_decode
from nnlab.errors import NnlabError

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1)}
MASK = "mask"  # class-index PNGs: nearest-neighbour resize, never colour-converted (its own cache key)
# Below this many files, decode in this process alone: a worker takes about 0.2 s to start, in which this process
# decodes 1,000-2,000 small JPEGs by itself (break-even measured on 2 cores: benchmarks/README.md, "Image pipeline").
POOL_MIN_FILES = 1000
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)  # a bad file, not a bug


@dataclass
class Decoded:
    images: np.ndarray  # uint8, (n_good, height, width, channels)
    good: np.ndarray  # indices into the requested file list
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def decode_one(path: Path, size: tuple[int, int], mode: str, crop: bool) -> np.ndarray:
    """One file → (height, width, channels) uint8; grayscale, palette and RGBA files are converted to `mode`.
    A photo stored sideways (a phone's EXIF orientation) is turned upright first, as a viewer shows it."""
    height, width = size
    if (array := opencv_decode.decode(path, size, mode)) is not None:  # the same pixels, without the GIL
        if array.shape[:2] == size:
            return array
        return fit_image(Image.fromarray(array[..., 0] if mode == "L" else array), size, mode, crop)
    with Image.open(path) as im:
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # stored sideways: draft for the swapped size
        im.draft(mode, (height, width) if turned else (width, height))  # JPEG: libjpeg decodes at a reduced scale
        ImageOps.exif_transpose(im, in_place=True)  # the same pixels as a transposed copy, without the copy
        return fit_image(im, size, mode, crop)


def fit_image(im: Image.Image, size: tuple[int, int], mode: str, crop: bool) -> np.ndarray:
    """An opened image → (height, width, channels) uint8: converted to `mode`, centre-cropped to the aspect ratio
    with `crop`, resized (bilinear). `decode_one` and `nnlab predict` share it, so both decode alike."""
    height, width = size
    im = im.convert(mode) if im.mode != mode else im
    if crop:  # centre crop to the target aspect ratio, as Keras's crop_to_aspect_ratio does
        scale = min(im.width / width, im.height / height)
        w, h = round(width * scale), round(height * scale)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im = im.crop((left, top, left + w, top + h))
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(im, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One mask → (height, width, 1) uint8 of class indices. Palette (P) files keep their indices, not their
    colours; bilinear would invent in-between classes at every edge, so the resize is nearest-neighbour."""
    height, width = size
    with Image.open(path) as im:
        if im.mode == "1":
            im = im.convert("L")  # 0/255, which the loaders map to 0/1
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.NEAREST)
        array = np.asarray(im)
    if array.ndim == 3:  # an RGB(A) copy of a grayscale mask is fine; real colours are not class indices
        if not (array[..., :3] == array[..., :1]).all():
            raise ValueError(f"a {im.mode} mask with colours; save it as a palette (P) or grayscale (L) PNG")
        array = array[..., 0]
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"mask values {array.min()}..{array.max()} do not fit 0-255")
    return array.astype(np.uint8)[..., None]


def decode_into(images: np.ndarray, i: int, path: Path, size: tuple[int, int], mode: str, crop: bool) -> str | None:
    """Decode `path` into `images[i]`; None, or why the file cannot be read. The one per-file step of both the
    threads here and the worker processes (`decode_pool`), so both give the same pixels and the same reasons."""
    try:
        images[i] = decode_mask(path, size) if mode == MASK else decode_one(path, size, mode, crop)
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def pixel_format(color_mode: str) -> tuple[str, int]:
    """(Pillow mode or MASK, channels) of a dataset.color_mode."""
    if color_mode not in COLOR_MODES and color_mode != MASK:
        raise NnlabError(f"color_mode '{color_mode}' is not one of {sorted(COLOR_MODES)}; fix dataset.color_mode.")
    return COLOR_MODES.get(color_mode, (MASK, 1))


def decode_files(files: Sequence[Path], size: tuple[int, int], color_mode: str = "rgb", crop: bool = False,
                 workers: int | None = None, *, processes: int | None = None,
                 pool_min_files: int | None = None) -> Decoded:
    """Every file → one uint8 array: in `processes` processes (default: one a usable core) for `pool_min_files`
    files or more (default POOL_MIN_FILES), else in `workers` threads of this one (processes=1: always)."""
    from nnlab.data.decode_pool import decode_in_pool  # imported here: it imports this module

    mode, channels = pixel_format(color_mode)
    shape = (len(files), size[0], size[1], channels)
    if threads := opencv_threads(files, size, mode, processes):
        return decode_in_threads(files, shape, mode, crop, threads)
    if n_workers := pool_workers(len(files), processes, pool_min_files):
        with tempfile.TemporaryDirectory(prefix="nnlab-decode-", ignore_cleanup_errors=True) as tmp:
            decoded = decode_in_pool(files, shape, mode, crop, n_workers, Path(tmp) / "images.npy")
            if decoded is not None:  # into memory, before the temporary file goes
                return Decoded(np.array(decoded.images[decoded.good] if decoded.bad else decoded.images),
                               decoded.good, decoded.bad)
    return decode_in_threads(files, shape, mode, crop, workers)


def opencv_threads(files: Sequence[Path], size: tuple[int, int], mode: str, processes: int | None) -> int:
    """Threads to decode in, where OpenCV takes these files (judged by the first: a folder holds one kind), as
    it decodes without the GIL: `processes`, else one a usable core. 0: Pillow decodes them."""
    from nnlab.data import decode_pool

    if not files or not opencv_decode.takes(files[0], size, mode):
        return 0
    return processes or decode_pool.usable_cores()


def pool_workers(n_files: int, processes: int | None, pool_min_files: int | None) -> int:
    """Worker processes to start beside this one (0: decode here alone); see `decode_pool.pool_workers`."""
    from nnlab.data import decode_pool

    return decode_pool.pool_workers(n_files, processes, POOL_MIN_FILES if pool_min_files is None else pool_min_files)


def decode_in_threads(files: Sequence[Path], shape: tuple[int, ...], mode: str, crop: bool,
                      workers: int | None, on_chunk=None) -> Decoded:
    """Decode in `workers` threads into memory, a chunk of files at a time; `on_chunk(start, rows)` gets each
    chunk's rows when it is done (rows of unreadable files: undefined)."""
    images = np.empty(shape, np.uint8)
    ok = np.zeros(len(files), bool)
    bad: list[tuple[str, str]] = []

    def work(start: int) -> None:
        for i in range(start, min(start + chunk, len(files))):
            reason = decode_into(images, i, files[i], shape[1:3], mode, crop)
            if reason is None:
                ok[i] = True
            else:
                bad.append((str(files[i]), reason))
        if on_chunk is not None:
            on_chunk(start, images[start:start + chunk])

    # Pillow holds the GIL for part of each decode, so threads beyond the core count only add contention.
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = min(64, -(-len(files) // (4 * workers)) or 1)  # a task a file would cost as much as OpenCV's decode
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(0, len(files), chunk)))
    good = np.flatnonzero(ok)
    return Decoded(images[good] if len(bad) else images, good, sorted(bad))
