"""Durable file writes: what the cache, downloads, checkpoints and model exports share. A file is complete under
its final name or not there at all: written beside it, flushed and fsync'd, renamed, and the rename made durable."""

import os
from pathlib import Path


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
    """`text` into `path` through a temporary file renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(path.parent)
