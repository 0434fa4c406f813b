"""Durable file writes: what the cache, downloads, checkpoints and model exports share. A file is complete under
its final name or not there at all: written beside it, flushed and fsync'd, renamed, and the rename made durable.

A full disk is a user's problem, not a crash: `space_guard` turns the OS's ENOSPC into one sentence naming the
folder and its free space, `check_space` refuses a write that would not fit before it starts, and `h5_written`
keeps HDF5 from crashing the process when the disk fills under it."""

import contextlib
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from nnlab.errors import NnlabError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space left; disk quota exceeded
MB = 1 << 20


class NoSpaceError(NnlabError):
    """A write that the disk cannot take: one sentence naming the folder and its free space."""


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file of its own (two writers never share one) renamed over it."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the user's umask applies, as with open()
    try:
        with open(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(path.parent)


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the disk of `path` (its nearest existing folder), for this user; None where unknown."""
    path = Path(path).expanduser().absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def megabytes(n: int | None) -> str:
    return "an unknown amount" if n is None else f"{n / MB:.1f} MB"


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from or during, is the OS saying the disk (or quota) is full."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return True
        err = err.__cause__ or err.__context__
    return False


def no_space(folder: str | Path, what: str, hint: str, needed: int | None = None) -> NoSpaceError:
    """The sentence: what could not be written, where, what it needs and what is free, and what to do."""
    need = f"needs about {megabytes(needed)}, " if needed else ""
    return NoSpaceError(f"No space left {what} in {folder}: {need}{megabytes(free_bytes(folder))} free; {hint}.")


def fullest(*folders: str | Path | None) -> Path:
    """Of the folders a failed write may have used, the one with the least free space: the full one."""
    known = [Path(f) for f in folders if f]
    return min(known, key=lambda f: free_bytes(f) if free_bytes(f) is not None else sys.maxsize)


@contextlib.contextmanager
def space_guard(*folders: str | Path | None, what: str, hint: str) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT) met inside into NoSpaceError naming the fullest of `folders`."""
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise no_space(fullest(*folders), what, hint) from err


def check_space(folder: str | Path, needed: int, what: str, hint: str) -> None:
    """Refuse, before writing, what would not fit on the disk of `folder` (where its free space is known)."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise no_space(folder, what, hint, needed)


@contextlib.contextmanager
def h5_written(path: str | Path) -> Iterator[None]:
    """Around h5py writing the file `path` (or files in the private folder `path`). When the disk fills mid-write,
    HDF5 can keep the file open in a state it cannot close: every later flush fails again and the interpreter
    crashes at exit (a segmentation fault, after h5py's tracebacks). So on failure the half-written files are
    emptied (their space comes back) and deleted, and the HDF5 files opened meanwhile are closed, before the
    error goes on. (Such a file's name must not be asked for: that alone can crash.)"""
    before = open_h5_files()
    try:
        yield
    except BaseException:
        release_h5(Path(path), before)
        raise


def open_h5_files() -> set[int]:
    if "h5py" not in sys.modules:
        return set()
    import h5py

    return {file_id.id for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)}


def release_h5(path: Path, before: set[int]) -> None:
    written = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    for file in written:
        with contextlib.suppress(OSError):
            os.truncate(file, 0)
    if "h5py" in sys.modules:
        import h5py

        for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
            if file_id.id not in before:
                with contextlib.suppress(Exception):
                    file_id.close()
    for file in written:
        with contextlib.suppress(OSError):
            file.unlink()
