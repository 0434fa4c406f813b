"""Many image files → one uint8 array: the one place that decides how (OpenCV threads, Pillow threads, or worker
processes); `image_cache` follows the same plan when it writes the array to disk.

Decoding is the slow part of every image lab (JPEG → pixels → resize), and it gives the same answer every epoch
and every run, so `image_cache` keeps its result on disk for later runs. Files that OpenCV decodes to Pillow's
pixels (`opencv_decode`: small JPEGs and PNGs, most lab datasets) are decoded in one thread a core, as OpenCV
releases the GIL. Others go to Pillow, which holds it: a list of `POOL_MIN_FILES` files or more is decoded by
this process and a worker process for each further core (`decode_pool`), a shorter one in threads of this
process, where starting workers would cost more than they save (benchmarks/README.md, "Image pipeline"). Every
path decodes each file with `images.decode_into`, under the same pixel limit. Unreadable and too-large files
are skipped and reported, never silently dropped: the caller decides whether too many were bad.
"""

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.data import decode_pool, opencv_decode
from nnlab.data.images import MAX_PIXELS, Decoded, decode_into, pixel_format

# Below this many files, decode in this process alone: a worker takes about 0.2 s to start, in which this process
# decodes 1,000-2,000 small JPEGs by itself (break-even measured on 2 cores: benchmarks/README.md, "Image pipeline").
POOL_MIN_FILES = 1000
OPENCV, PROCESSES, THREADS = "opencv", "processes", "threads"


@dataclass(frozen=True)
class Plan:
    """How a list of files is decoded: `how` (OPENCV: OpenCV's threads; PROCESSES: `workers` worker processes
    beside this one; THREADS: Pillow in threads of this process), into an array of `shape`."""

    how: str
    mode: str  # Pillow mode (RGB, L) or images.MASK
    shape: tuple[int, int, int, int]
    threads: int | None  # threads of this process (None: one a core, at most 8); PROCESSES' fallback too
    workers: int = 0


def plan(files: Sequence[Path], size: tuple[int, int], color_mode: str, *, workers: int | None = None,
         processes: int | None = None, pool_min_files: int | None = None) -> Plan:
    """The decoding of `files`: OpenCV's threads where OpenCV takes them (judged by the first: a folder holds one
    kind), `processes` of them, else one a usable core; else `processes` processes (default one a usable core)
    for `pool_min_files` files or more (default POOL_MIN_FILES); else `workers` threads (processes=1: always)."""
    mode, channels = pixel_format(color_mode)
    shape = (len(files), size[0], size[1], channels)
    if files and opencv_decode.takes(files[0], size, mode):
        return Plan(OPENCV, mode, shape, processes or decode_pool.usable_cores())
    n = decode_pool.pool_workers(len(files), processes, POOL_MIN_FILES if pool_min_files is None else pool_min_files)
    return Plan(PROCESSES if n else THREADS, mode, shape, workers, n)


def decode_files(files: Sequence[Path], size: tuple[int, int], color_mode: str = "rgb", crop: bool = False,
                 workers: int | None = None, *, processes: int | None = None, pool_min_files: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> Decoded:
    """Every file → one uint8 array in memory, as `plan` decides; a file of more than `max_pixels` pixels is
    refused from its header, as a bad file."""
    how = plan(files, size, color_mode, workers=workers, processes=processes, pool_min_files=pool_min_files)
    return decode_planned(files, how, crop, max_pixels)


def decode_planned(files: Sequence[Path], how: Plan, crop: bool, max_pixels: int) -> Decoded:
    """Carry out `how` into memory. Worker processes decode into a temporary file, copied in; where it cannot be
    made (a full disk), this process decodes in threads."""
    if how.how == PROCESSES:
        with tempfile.TemporaryDirectory(prefix="nnlab-decode-", ignore_cleanup_errors=True) as tmp:
            decoded = decode_pool.decode_in_pool(files, how.shape, how.mode, crop, how.workers,
                                                 Path(tmp) / "images.npy", max_pixels=max_pixels)
            if decoded is not None:  # into memory, before the temporary file goes
                return Decoded(np.array(decoded.images[decoded.good] if decoded.bad else decoded.images),
                               decoded.good, decoded.bad)
    return decode_in_threads(files, how.shape, how.mode, crop, how.threads, max_pixels=max_pixels)


def decode_in_threads(files: Sequence[Path], shape: tuple[int, ...], mode: str, crop: bool,
                      workers: int | None, on_chunk=None, *, max_pixels: int) -> Decoded:
    """Decode in `workers` threads into memory, a chunk of files at a time; `on_chunk(start, rows)` gets each
    chunk's rows when it is done (rows of unreadable files: undefined)."""
    images = np.empty(shape, np.uint8)
    ok = np.zeros(len(files), bool)
    bad: list[tuple[str, str]] = []

    def work(start: int) -> None:
        for i in range(start, min(start + chunk, len(files))):
            reason = decode_into(images, i, files[i], shape[1:3], mode, crop, max_pixels)
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
