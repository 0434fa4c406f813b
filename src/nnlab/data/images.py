"""Decode image files once into a uint8 array, cached on disk and memory-mapped on later runs.

Decoding is the slow part of every image lab (JPEG → pixels → resize), and it gives the same answer every
epoch and every run, so it happens once, into a `.npy` file under the cache folder that later runs map without
reading it all. A list of `POOL_MIN_FILES` files or more is decoded by this process and a worker process for
each further core (`decode_pool`: Pillow holds the GIL), all writing straight into that file; a shorter one in
threads of this process, where starting workers would cost more than they save. Unreadable files are skipped and
reported, never silently dropped: the caller decides whether too many were bad.
"""

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nnlab.errors import NnlabError
from nnlab.files import fsync_dir

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CACHE_VERSION = 2  # 2: EXIF orientation applied
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
    if n_workers := pool_workers(len(files), processes, pool_min_files):
        with tempfile.TemporaryDirectory(prefix="nnlab-decode-", ignore_cleanup_errors=True) as tmp:
            decoded = decode_in_pool(files, shape, mode, crop, n_workers, Path(tmp) / "images.npy")
            if decoded is not None:  # into memory, before the temporary file goes
                return Decoded(np.array(decoded.images[decoded.good] if decoded.bad else decoded.images),
                               decoded.good, decoded.bad)
    return decode_in_threads(files, shape, mode, crop, workers)


def pool_workers(n_files: int, processes: int | None, pool_min_files: int | None) -> int:
    """Worker processes to start beside this one (0: decode here alone); see `decode_pool.pool_workers`."""
    from nnlab.data import decode_pool

    return decode_pool.pool_workers(n_files, processes, POOL_MIN_FILES if pool_min_files is None else pool_min_files)


def decode_in_threads(files: Sequence[Path], shape: tuple[int, ...], mode: str, crop: bool,
                      workers: int | None) -> Decoded:
    images = np.empty(shape, np.uint8)
    ok = np.zeros(len(files), bool)
    bad: list[tuple[str, str]] = []

    def work(i: int) -> None:
        reason = decode_into(images, i, files[i], shape[1:3], mode, crop)
        if reason is None:
            ok[i] = True
        else:
            bad.append((str(files[i]), reason))

    # Pillow holds the GIL for part of each decode, so threads beyond the core count only add contention.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(files))))
    good = np.flatnonzero(ok)
    return Decoded(images[good] if len(bad) else images, good, sorted(bad))


def cache_key(files: Sequence[Path], size: tuple[int, int], color_mode: str, crop: bool) -> str:
    """Changes when any file is added, removed, replaced or touched, or when the decoding settings change."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{size}|{color_mode}|{crop}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cached_decode(files: Sequence[Path], size: tuple[int, int], color_mode: str = "rgb", crop: bool = False,
                  cache_dir: str | None = None, *, processes: int | None = None,
                  pool_min_files: int | None = None) -> Decoded:
    """`decode_files`, memoised in `cache_dir` (None: no cache). Each file is written whole or not at all (a
    temporary file, flushed to disk, then renamed), the .json sidecar last: a run that dies halfway leaves no
    entry that a later run would trust. An entry that is damaged anyway (a truncated .npy, a shape or dtype
    that differs from its sidecar) is reported, deleted and decoded again. Worker processes write the entry's
    array directly, so its images are then the entry mapped, as on a later run."""
    pool = {"processes": processes, "pool_min_files": pool_min_files}
    if not cache_dir:
        return decode_files(files, size, color_mode, crop, **pool)
    folder = Path(cache_dir).expanduser()
    key = cache_key(files, size, color_mode, crop)
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if meta_path.is_file() and array_path.is_file():
        channels = COLOR_MODES.get(color_mode, (MASK, 1))[1]
        try:
            return load_entry(array_path, meta_path, (*size, channels))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("images: the cache entry %s is damaged (%s); deleting it and decoding the files again",
                        array_path, err)
            for path in (meta_path, array_path):
                path.unlink(missing_ok=True)
    from nnlab.data.decode_pool import decode_in_pool

    mode, channels = pixel_format(color_mode)
    shape = (len(files), *size, channels)
    workers = pool_workers(len(files), processes, pool_min_files)
    target = temporary_file(folder) if workers else None  # None: an unwritable folder (decode_files copes)
    decoded = decode_in_pool(files, shape, mode, crop, workers, target) if target else None
    if decoded is not None and not decoded.bad:  # the array is all there: move it into place
        return commit_entry(target, decoded, len(files), array_path, meta_path)
    if decoded is not None:  # saved below without the rows of the unreadable files
        decoded = Decoded(np.array(decoded.images[decoded.good]), decoded.good, decoded.bad)
        target.unlink(missing_ok=True)
    elif target is not None:  # the file could not be made (and the log says why): decode in memory
        decoded = decode_in_threads(files, shape, mode, crop, None)
    else:
        decoded = decode_files(files, size, color_mode, crop, **pool)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(array_path, lambda f: np.save(f, decoded.images))
    except OSError as err:  # a read-only or full disk costs speed next time, not this run
        log.warning("could not cache decoded images in %s (%s); set dataset.cache_dir to a writable folder",
                    folder, err)
        return decoded
    return write_sidecar(decoded, len(files), array_path, meta_path)


def temporary_file(folder: Path) -> Path | None:
    """A new empty file in `folder` (created if need be) for workers to decode into; None if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-", suffix=".npy", delete=False) as tmp:
            return Path(tmp.name)
    except OSError:
        return None


def commit_entry(target: Path, decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> Decoded:
    """Flush the workers' file to disk and rename it to `array_path`, then write the sidecar. If the disk
    refuses, the pixels are kept in memory for this run and the next run decodes again."""
    try:
        fd = os.open(target, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(target, array_path)
        fsync_dir(array_path.parent)
    except OSError as err:
        log.warning("could not cache decoded images in %s (%s); set dataset.cache_dir to a writable folder",
                    array_path.parent, err)
        decoded = Decoded(np.array(decoded.images), decoded.good, decoded.bad)
        target.unlink(missing_ok=True)
        return decoded
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return write_sidecar(Decoded(np.load(array_path, mmap_mode="r"), decoded.good, decoded.bad), n_files,
                         array_path, meta_path)


def write_sidecar(decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> Decoded:
    """The .json that makes a cache entry of `array_path` (written last); a failure costs speed next time."""
    meta = {"good": decoded.good.tolist(), "bad": decoded.bad, "files": n_files,
            "shape": list(decoded.images.shape), "dtype": str(decoded.images.dtype)}
    try:
        write_atomic(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    except OSError as err:
        log.warning("could not cache decoded images in %s (%s); set dataset.cache_dir to a writable folder",
                    meta_path.parent, err)
    return decoded


def load_entry(array_path: Path, meta_path: Path, image_shape: tuple[int, int, int]) -> Decoded:
    """Map a cache entry, checking it against its sidecar (raises ValueError for a damaged one)."""
    meta = json.loads(meta_path.read_text())
    images = np.load(array_path, mmap_mode="r")  # a truncated file: "mmap length is greater than file size"
    good = np.asarray(meta["good"], np.int64)
    expected = tuple(meta.get("shape") or (len(good), *image_shape))
    if images.shape != expected or images.shape[1:] != image_shape or len(images) != len(good):
        raise ValueError(f"shape {images.shape}, its sidecar says {expected}")
    if images.dtype != np.dtype(meta.get("dtype", "uint8")) or images.dtype != np.uint8:
        raise ValueError(f"dtype {images.dtype}, expected uint8")
    log.info("images: %d from cache %s", len(images), array_path)
    return Decoded(images, good, [tuple(b) for b in meta["bad"]])


def write_atomic(path: Path, write) -> None:
    """Write `path` whole or not at all: into a temporary file beside it, flushed to disk, then renamed."""
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False)
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


