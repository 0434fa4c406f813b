"""Decoding in several processes, for image lists large enough to repay starting them.

Pillow holds the GIL while it opens a file, parses its headers and copies the pixels out, which is most of the
work for a small JPEG, so decoding threads barely beat one core. Processes have a GIL each. The files are cut
into chunks; worker processes take chunks from the front of the list and this process, which would otherwise
wait, takes them from the back. Each decodes its chunk straight into its rows of one memory-mapped `.npy` file
(the cache entry being written, or a temporary file), so no pixels travel through pipes. The arrays are the ones
the in-process path makes, byte for byte: every process runs `images.decode_into` on each file, under the pixel
limit it is sent with each chunk, and an unreadable or too-large file comes back as the same (file, reason) pair.
Whether to start workers at all is `decoding.plan`'s choice.

A worker is a fresh `python -c` interpreter that imports this module alone and reads chunks from its stdin:
  - a fresh interpreter is safe beside TensorFlow's or JAX's threads (a fork of this process is not);
  - unlike multiprocessing's spawn it does not re-run the caller's `__main__` (a script without an
    `if __name__ == "__main__":` guard stays safe), and it starts in about 0.2 s of one core: numpy and Pillow,
    not `nnlab.data`'s package imports (scikit-learn, over a second), which a bare package object stands in for.
"""

import json
import logging
import math
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import numpy as np

from nnlab.data.images import Decoded, decode_into

log = logging.getLogger(__name__)

MAX_CHUNK = 128  # files; the chunks a worker holds at the end are what this process may wait for
CHUNKS_PER_PROCESS = 16  # small chunks even out a process that a busy machine slows down; each costs a message
IN_HAND = 2  # chunks a worker holds: one to decode, one queued, so it never waits for this process
BOOT = """
import json, sys, types
sys.path[:] = json.loads(sys.argv[1])
package = types.ModuleType("nnlab.data")  # nnlab.data's __init__ imports scikit-learn; its modules need none of it
package.__path__ = [sys.argv[2]]
sys.modules["nnlab.data"] = package
from nnlab.data.decode_pool import serve
serve()
"""


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity where the OS has one."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool_workers(n_files: int, processes: int | None, min_files: int) -> int:
    """How many worker processes should decode `n_files` beside this one, which decodes too (`processes` in all,
    else one a usable core): 0, decode in this process alone, for one process or fewer files than `min_files`,
    where starting a worker costs more than it saves."""
    if n_files < max(min_files, 2):
        return 0
    return max(0, min(usable_cores() if processes is None else processes, n_files // 2) - 1)


def decode_in_pool(files, shape: tuple[int, int, int, int], mode: str, crop: bool, workers: int,
                   target: Path, *, max_pixels: int) -> Decoded | None:
    """Decode `files` into a new .npy file `target` of `shape`, in this process and `workers` more, refusing
    files of more than `max_pixels` pixels. The images are that file mapped, every row (an unreadable file's row
    stays zero). None, and no file, when the file cannot be made (a full disk): the caller then decodes in memory."""
    try:
        found = decode_in_processes(files, shape, mode, crop, workers, target, max_pixels)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if found is None:
        target.unlink(missing_ok=True)
        return None
    ok = np.ones(len(files), bool)
    ok[[row for row, _, _ in found]] = False
    bad = sorted((file, reason) for _, file, reason in found)
    return Decoded(np.load(target, mmap_mode="r"), np.flatnonzero(ok), bad)


def decode_in_processes(files, shape: tuple[int, int, int, int], mode: str, crop: bool, workers: int,
                        target: Path, max_pixels: int) -> list[tuple[int, str, str]] | None:
    """(row, file, reason) for each unreadable file; None when `target` cannot be made."""
    try:
        images = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=shape)
        job = (str(target), images.offset, shape, mode, crop, max_pixels)
        del images  # the header is written; each process maps the rows it decodes
        reserve(target)
    except (OSError, ValueError) as err:  # a full disk, a file system that cannot map files
        log.warning("images: cannot decode into %s (%s); decoding in memory", target, err)
        return None
    size = min(MAX_CHUNK, max(16, math.ceil(len(files) / ((workers + 1) * CHUNKS_PER_PROCESS))))
    starts = deque(range(0, len(files), size))
    log.info("images: decoding %d files in %d processes", len(files), workers + 1)
    with Workers(workers) as pool:
        found = pool.share(starts, lambda a: (a, list(files[a:a + size]), *job))
    return [bad for a in sorted(found) for bad in found[a]]


def reserve(path: Path) -> None:
    """Allocate the file's disk space now: a full disk is then an OSError here, not a SIGBUS (a crash) when a
    process writes its mapped rows."""
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)


def decode_chunk(start: int, files: list, target: str, offset: int, shape: tuple[int, int, int, int], mode: str,
                 crop: bool, max_pixels: int) -> list[tuple[int, str, str]]:
    """Decode `files` into rows `start`… of the .npy file `target` (its data at byte `offset`); returns (row,
    file, reason) for each file that cannot be read or has more than `max_pixels` pixels."""
    rows = np.memmap(target, np.uint8, "r+", offset + start * math.prod(shape[1:]), (len(files), *shape[1:]))
    bad = []
    for i, path in enumerate(files):
        reason = decode_into(rows, i, path, shape[1:3], mode, crop, max_pixels)
        if reason is not None:
            bad.append((start + i, str(path), reason))
    del rows  # unmapped; the pages are in the OS's cache, and the file is synced once, at the end
    return bad


class Workers:
    """Worker processes fed chunks through their stdin (a thread each reads their replies), and this process.

    The workers take chunks from the front, two each in hand, and this process decodes from the back. When none
    is left, it also decodes the chunks still waiting in a worker's hands (or all of them, for a worker that has
    not answered yet: still starting, or gone), so it never waits for a slow start; a chunk decoded twice is
    written twice with the same bytes. A worker that dies leaves its chunks to the others."""

    def __init__(self, n: int):
        command = [sys.executable, "-c", BOOT, json.dumps(sys.path), str(Path(__file__).resolve().parent)]
        self.procs: list[subprocess.Popen] = []
        self.replies: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(n):
            try:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            except OSError as err:  # no such executable, no processes left
                log.warning("images: cannot start a decoding process (%s); decoding in %d", err, i + 1)
                break
            self.procs.append(proc)
            threading.Thread(target=self.read, args=(i,), daemon=True).start()
        self.held: list[list[int]] = [[] for _ in self.procs]  # chunks sent to each worker and not answered
        self.answered = [False] * len(self.procs)
        self.alive = [True] * len(self.procs)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        for i, proc in enumerate(self.procs):
            if self.held[i] and proc.poll() is None:
                proc.kill()  # decoding what this process has done already, or an error here: not needed
            try:
                proc.stdin.close()  # an idle worker reads end-of-file and exits
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def read(self, i: int) -> None:
        try:
            while True:
                self.replies.put((i, *pickle.load(self.procs[i].stdout)))
        except Exception:  # end of file: the worker exited
            self.replies.put((i, "died", None, None))

    def share(self, starts: deque, task) -> dict[int, list]:
        """Decode every chunk (`task(start)` → decode_chunk's arguments); {start: its unreadable files}."""
        found: dict[int, list] = {}
        total = len(starts)
        while True:
            self.collect(found, wait=False)
            if len(found) == total:
                return found
            self.top_up(starts, task)
            start = starts.pop() if starts else self.steal(found)
            if start is not None:
                found[start] = decode_chunk(*task(start))
            elif any(start not in found for held in self.held for start in held):
                self.collect(found, wait=True)  # for the chunks that running workers are decoding now
            else:  # cannot happen: every chunk is done, held, or left
                raise RuntimeError(f"decode_pool: {total - len(found)} chunks lost")

    def top_up(self, starts: deque, task) -> None:
        for i, proc in enumerate(self.procs):
            while self.alive[i] and len(self.held[i]) < IN_HAND and starts:
                start = starts.popleft()
                self.held[i].append(start)
                try:
                    pickle.dump(task(start), proc.stdin)
                    proc.stdin.flush()
                except OSError:  # its end of the pipe is closed: it died (its reader says so)
                    self.alive[i] = False

    def steal(self, found: dict) -> int | None:
        for i, held in enumerate(self.held):
            waiting = [start for start in held if start not in found]
            busy = 1 if self.alive[i] and self.answered[i] else 0  # the chunk it is decoding now
            if len(waiting) > busy:
                return waiting[-1]
        return None

    def collect(self, found: dict, wait: bool) -> None:
        """Take in the replies that are there (when `wait`, after waiting for one)."""
        block = wait
        while True:
            try:
                i, status, start, value = self.replies.get(block=block)
            except queue.Empty:
                return
            block = False
            if status == "died":
                self.alive[i] = False
                log.warning("images: a decoding process exited (status %s); the others decode its files",
                            self.procs[i].wait())
                continue
            self.held[i].remove(start)
            self.answered[i] = True
            if status == "error" and start not in found:
                raise value  # what decoding the chunk raised, as it would have here
            found.setdefault(start, value)


def serve() -> None:
    """A worker's loop: decode_chunk's arguments in on stdin; ("ok", start, unreadable files) or ("error", start,
    exception) out on stdout. Anything else printed goes to stderr, so it cannot garble the replies."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    while True:
        try:
            task = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        try:
            reply = ("ok", task[0], decode_chunk(*task))
        except Exception as err:  # sent back whole when it pickles, else as a RuntimeError naming it
            reply = ("error", task[0], err)
            try:
                pickle.dumps(err)
            except Exception:
                reply = ("error", task[0], RuntimeError(f"{type(err).__name__}: {err}"))
        pickle.dump(reply, replies)
        replies.flush()
