"""The decoded-image cache's entries: a `.npy` array and its `.json` sidecar, written whole or not at all.

An entry is written into a temporary file, flushed to disk and renamed, the sidecar last, so a run that dies
halfway leaves no entry a later run would trust; one that is damaged anyway (a truncated `.npy`, a shape or dtype
that differs from its sidecar) is refused by `load_entry`. A large array is written behind (`save_entry`): the
run trains on the decoded array in memory meanwhile, and this process waits for the write before it exits.
"""

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnlab.data.decode_pool import decode_in_pool, reserve
from nnlab.data.decoding import OPENCV, PROCESSES, THREADS, Plan, decode_files, decode_in_threads, decode_planned, plan
from nnlab.data.images import MAX_PIXELS, Decoded
from nnlab.files import free_bytes, fsync_dir, is_disk_full, megabytes

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: EXIF orientation applied
# Arrays above this are written in a thread while training starts: flushing 230 MB (fruits-360's training set)
# to disk took 0.2-0.6 s here, as long as decoding it; a smaller one is written at once (milliseconds).
WRITE_BEHIND_BYTES = 32 << 20
PENDING: dict[Path, threading.Thread] = {}  # entries this process is writing behind


def cache_key(files: Sequence[Path], size: tuple[int, int], color_mode: str, crop: bool,
              max_pixels: int = MAX_PIXELS) -> str:
    """Changes when any file is added, removed, replaced or touched, or when the decoding settings change (a
    pixel limit other than the default too, as it decides which files are decoded; keys made before the limit
    existed stay valid)."""
    limit = f"|{max_pixels}" if max_pixels != MAX_PIXELS else ""
    h = hashlib.sha256(f"{CACHE_VERSION}|{size}|{color_mode}|{crop}{limit}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cached_decode(files: Sequence[Path], size: tuple[int, int], color_mode: str = "rgb", crop: bool = False,
                  cache_dir: str | None = None, *, processes: int | None = None,
                  pool_min_files: int | None = None, max_pixels: int = MAX_PIXELS) -> Decoded:
    """`decoding.decode_files`, memoised in `cache_dir` (None: no cache), following the same `decoding.plan`.
    Worker processes write the entry's array directly, so its images are then the entry mapped, as on a later
    run; OpenCV's threads decode into memory and write each chunk's rows to the entry as they finish it
    (`decode_streaming`)."""
    if not cache_dir:
        return decode_files(files, size, color_mode, crop, processes=processes, pool_min_files=pool_min_files,
                            max_pixels=max_pixels)
    how = plan(files, size, color_mode, processes=processes, pool_min_files=pool_min_files)
    folder = Path(cache_dir).expanduser()
    key = cache_key(files, size, color_mode, crop, max_pixels)
    array_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if (found := cached_entry(array_path, meta_path, how.shape[1:])) is not None:
        return found
    if how.how == OPENCV:
        return decode_streaming(files, how, crop, max_pixels, array_path, meta_path)
    target = temporary_file(folder) if how.how == PROCESSES else None  # None: an unwritable folder too
    decoded = decode_in_pool(files, how.shape, how.mode, crop, how.workers, target,
                             max_pixels=max_pixels) if target else None
    if decoded is not None and not decoded.bad:  # the array is all there: move it into place
        return commit_entry(target, decoded, len(files), array_path, meta_path)
    if decoded is not None:  # saved below without the rows of the unreadable files
        decoded = Decoded(np.array(decoded.images[decoded.good]), decoded.good, decoded.bad)
        target.unlink(missing_ok=True)
    else:  # no workers, or no file for them here (decoded in a temporary folder), or it could not be made
        decoded = decode_planned(files, how if target is None else dataclasses.replace(how, how=THREADS), crop,
                                 max_pixels)
    save_entry(decoded, len(files), array_path, meta_path)
    return decoded


def cached_entry(array_path: Path, meta_path: Path, image_shape: tuple[int, int, int]) -> Decoded | None:
    """The entry mapped, once this process has finished writing it; None if there is none. A damaged one is
    reported and deleted."""
    wait_for(array_path)
    if not (meta_path.is_file() and array_path.is_file()):
        return None
    try:
        return load_entry(array_path, meta_path, image_shape)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("images: the cache entry %s is damaged (%s); deleting it and decoding the files again",
                    array_path, err)
        for path in (meta_path, array_path):
            path.unlink(missing_ok=True)
    return None


def decode_streaming(files: Sequence[Path], how: Plan, crop: bool, max_pixels: int, array_path: Path,
                     meta_path: Path) -> Decoded:
    """Decode in `how.threads` threads into memory, each writing the rows of a chunk it has decoded to the new
    entry's file (os.pwrite, without the GIL), so that the write overlaps the decoding; then flush and rename it,
    behind if it is large. (Writing a new file's pages through a mapping, as the workers do, faults on every
    page, which costs more than OpenCV's decoding of them.) With an unreadable file the entry is saved again
    without its row."""
    rows = EntryFile.create(array_path.parent, how.shape)
    decoded = decode_in_threads(files, how.shape, how.mode, crop, how.threads, rows.write if rows else None,
                                max_pixels=max_pixels)
    if rows is not None and not decoded.bad:
        finish(decoded.images.nbytes, array_path, rows.commit, decoded, len(files), array_path, meta_path)
        return decoded
    if rows is not None:
        rows.discard()
    save_entry(decoded, len(files), array_path, meta_path)
    return decoded


class EntryFile:
    """A new entry's `.npy` being written row by row: a temporary file with the array's header, rows written at
    their offsets from any thread, then flushed to disk and renamed (`commit`), or deleted (`discard`). A
    failed write is remembered, and the entry is then not committed."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # the header
        self.path, self.offset, self.row = path, images.offset, int(np.prod(shape[1:]))
        del images
        self.fd = os.open(path, os.O_RDWR)
        self.error: OSError | None = None

    @classmethod
    def create(cls, folder: Path, shape: tuple[int, ...]) -> "EntryFile | None":
        """None where the file cannot be made (a read-only folder; the log says why): the caller keeps the array
        in memory and tries the usual save."""
        if (path := temporary_file(folder)) is None:
            return None
        try:
            entry = cls(path, shape)
        except (OSError, ValueError) as err:
            log.warning("images: cannot write the cache entry %s (%s)", path, err)
            path.unlink(missing_ok=True)
            return None
        try:
            reserve(path)  # a full disk fails here, not halfway through
        except OSError as err:
            entry.fail(err)
        return entry

    def write(self, start: int, rows: np.ndarray) -> None:
        if self.error is None:
            view, at = memoryview(np.ascontiguousarray(rows)).cast("B"), self.offset + start * self.row
            try:
                while view:  # a regular file's write is short only when the disk fills, which then raises
                    written = os.pwrite(self.fd, view, at)
                    view, at = view[written:], at + written
            except OSError as err:
                self.fail(err)

    def fail(self, err: OSError) -> None:
        self.error = self.error or err

    def commit(self, decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> None:
        try:
            if self.error is not None:
                raise self.error
            move_into_place(self.fd, self.path, array_path)
            self.close()
        except OSError as err:
            cannot_cache(array_path.parent, err)
            self.discard()
            return
        write_sidecar(decoded, n_files, array_path, meta_path)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:  # once: a second close could close a file another thread has opened since
            os.close(fd)

    def discard(self) -> None:
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


def wait_for(array_path: Path) -> None:
    """Wait until this process's write of the entry `array_path`, if any, has finished."""
    if (thread := PENDING.pop(array_path, None)) is not None:
        thread.join()


def wait_all() -> None:
    """Wait until every entry this process is writing behind is written."""
    for array_path in list(PENDING):
        wait_for(array_path)


def save_entry(decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> None:
    """Write `decoded` as a new entry: at once, or behind for a large array, in a thread that the interpreter
    waits for at exit (not a daemon). A failure costs speed next time, not this run, which has the array."""
    finish(decoded.images.nbytes, array_path, write_entry, decoded, n_files, array_path, meta_path)


def finish(nbytes: int, array_path: Path, write, *args) -> None:
    """`write(*args)` now, or behind, in a thread, for an array of over WRITE_BEHIND_BYTES."""
    if nbytes <= WRITE_BEHIND_BYTES:
        write(*args)
        return
    thread = threading.Thread(target=write, args=args, name=f"nnlab-cache-{array_path.stem}")
    PENDING[array_path] = thread
    thread.start()


def write_entry(decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> None:
    try:
        array_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(array_path, lambda f: np.save(f, decoded.images))
    except OSError as err:  # a read-only or full disk costs speed next time, not this run
        cannot_cache(array_path.parent, err)
        return
    write_sidecar(decoded, n_files, array_path, meta_path)


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
            move_into_place(fd, target, array_path)
        finally:
            os.close(fd)
    except OSError as err:
        cannot_cache(array_path.parent, err)
        decoded = Decoded(np.array(decoded.images), decoded.good, decoded.bad)
        target.unlink(missing_ok=True)
        return decoded
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return write_sidecar(Decoded(np.load(array_path, mmap_mode="r"), decoded.good, decoded.bad), n_files,
                         array_path, meta_path)


def move_into_place(fd: int, source: Path, array_path: Path) -> None:
    """Flush the open file `fd` (at `source`) to disk, then rename it to `array_path`: after a crash the entry is
    whole or absent."""
    os.fsync(fd)
    os.replace(source, array_path)
    fsync_dir(array_path.parent)


def cannot_cache(folder: Path, err: OSError) -> None:
    """A cache write that failed costs speed next time, not this run (a full disk too: the run has the pixels in
    memory and trains on; its checkpoints, if on the same disk, then fail in one sentence)."""
    if is_disk_full(err):
        log.warning("could not cache decoded images in %s: no space left (%s free); training goes on uncached; free "
                    "some space or set dataset.cache_dir to a larger disk", folder, megabytes(free_bytes(folder)))
        return
    log.warning("could not cache decoded images in %s (%s); set dataset.cache_dir to a writable folder", folder, err)


def write_sidecar(decoded: Decoded, n_files: int, array_path: Path, meta_path: Path) -> Decoded:
    """The .json that makes a cache entry of `array_path` (written last); a failure costs speed next time."""
    meta = {"good": decoded.good.tolist(), "bad": decoded.bad, "files": n_files,
            "shape": list(decoded.images.shape), "dtype": str(decoded.images.dtype)}
    try:
        write_atomic(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    except OSError as err:
        cannot_cache(meta_path.parent, err)
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


