"""A real full disk for tests: a small tmpfs mounted for the test (root only; CI runs as root). Where it cannot
be mounted the test is skipped, saying why; the in-process tests that inject ENOSPC at the write still run."""

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (mount(8)'s units), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30, check=False)
        why = done.stderr.strip() or f"mount exited {done.returncode}"
    except (OSError, subprocess.SubprocessError) as err:
        done, why = None, str(err)
    if done is None or done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to fill up ({why}): this needs root; the in-process tests that "
                    "inject ENOSPC at the write still run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30, check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk of `folder` with one file, leaving `leave` bytes (about: the disk's block size rules)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        block = b"\0" * (64 << 10)
        while True:
            try:
                os.write(fd, block)
            except OSError:
                break
        while True:  # the last partial block
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    return filler
