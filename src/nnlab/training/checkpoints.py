"""The checkpoint folder of a run: who owns it, what is written into it after each epoch, and what a resume
reads back. Keras is not imported here (the model's own methods do the saving), so `nnlab resume` can refuse
in a second without loading it.

- One owner: the process that trains or resumes a run holds an OS lock on `owner.lock` in the folder for the
  run's whole life (the OS releases it when the process dies, however it dies), with `owner.json` beside it
  saying who (host, pid, since when) for the sentence a second process refuses with.
- Two slots: the last two epochs' checkpoints are kept (`epoch-NNNNN/`: weights with the optimizer's state,
  and `state.json` with the weights' size and sha256), so a damaged newest one falls back to the one before.
- A full disk: the free space is checked against the checkpoint's size before h5py writes anything (HDF5
  crashes the process when the disk fills under it), and whatever fails leaves no temporary folder.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnlab.errors import NnlabError
from nnlab.files import MB, check_space, fsync_dir, h5_written, space_guard, write_text
from nnlab.processes import pid_alive

log = logging.getLogger(__name__)
WEIGHTS, STATE, LATEST = "weights.weights.h5", "state.json", "latest"
OWNER_LOCK, OWNER = "owner.lock", "owner.json"
KEEP = 2  # checkpoints kept: the newest and the one to fall back to
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
H5_OVERHEAD = 8 << 10  # bytes of HDF5 groups and headers per variable, generously
SPACE_MARGIN = 1.1  # over the expected size, plus SPACE_SLACK: HDF5's growth steps, state.json, the folder
SPACE_SLACK = 256 << 10
ROOM = "free some space there or point trainer.checkpoint_dir at a larger disk"


class RunOwnedError(NnlabError):
    """The checkpoint folder is held by another live process: one sentence naming it (host, pid)."""


# ---------------------------------------------------------------- ownership

@contextlib.contextmanager
def claim(folder: str | Path, run_id: str, create: bool = True) -> Iterator[dict[str, Any]]:
    """Hold the run's checkpoint folder until the block ends (or the process dies): a second process refuses
    with RunOwnedError naming this one. Leftovers of a dead owner's unfinished writes are removed. Without
    `create`, a folder that is gone (its run finished meanwhile) is not made again."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    lock = FileLock(str(folder / OWNER_LOCK), timeout=0)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise NnlabError(f"Run {run_id} has no checkpoint in {folder} any more (did it just finish?), so it "
                             "cannot be resumed.")
        lock.acquire()
    except Timeout:
        raise RunOwnedError(owned_by_another(folder, run_id)) from None
    except OSError as err:
        raise NnlabError(f"Cannot lock the checkpoint folder {folder} ({err.strerror or err}); make it writable or "
                         "point trainer.checkpoint_dir elsewhere.") from err
    try:
        remove_leftovers(folder)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id, "since": time.time()}
        with space_guard(folder, what="for the checkpoint's owner record", hint=ROOM):
            write_text(folder / OWNER, json.dumps(me))
        yield me
    finally:
        if (read_owner(folder) or {}).get("pid") == os.getpid():
            (folder / OWNER).unlink(missing_ok=True)
        lock.release()


def owned_by_another(folder: Path, run_id: str) -> str:
    owner = current_owner(folder)
    if owner is None:
        return (f"The checkpoint folder {folder} of run {run_id} is held by another process; wait for it to end, "
                "then try again.")
    who = f"process {owner.get('pid')} on {owner.get('host')}"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("since") or 0)))
    if owner.get("run_id") not in (None, run_id):
        return (f"The checkpoint folder {folder} is in use by run {owner['run_id']} ({who}, since {since}); give "
                "this job a trainer.checkpoint_dir of its own (or leave it unset).")
    return (f"Run {run_id} is being trained by {who} (since {since}); it cannot be resumed while that process "
            f"runs: wait for it to end, or stop it (kill {owner.get('pid')} on {owner.get('host')}) and resume again.")


def current_owner(folder: Path, wait_s: float = 2.0) -> dict[str, Any] | None:
    """The lock holder's record. A holder writes it just after taking the lock: a record left by a dead owner
    of this host (or none yet) is read again for a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        owner = read_owner(folder)
        if owner is not None and (owner.get("host") != socket.gethostname() or pid_alive(owner.get("pid"))):
            return owner
        if time.monotonic() > deadline:
            return owner
        time.sleep(0.1)


def read_owner(folder: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def process_exists(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def remove_leftovers(folder: Path) -> None:
    """A dead owner's half-written checkpoint (`.tmp-*`) and pointer (`.latest.*.partial`): never complete."""
    for leftover in [*folder.glob(".tmp-*"), *folder.glob(".*.partial")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- writing

def expected_bytes(model, folder: Path | None = None) -> int:
    """What the next checkpoint of `model` needs on disk: its variables (the optimizer's too; before the optimizer
    is built, two slots per trainable variable as Adam has) with HDF5's overhead, or the last checkpoint's
    size if larger, with a margin."""
    def nbytes(variables) -> int:
        total = 0
        for v in variables:
            size = 1
            for d in v.shape:
                size *= int(d or 1)
            total += size * dtype_bytes(v.dtype) + H5_OVERHEAD
        return total

    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        slots = nbytes(optimizer.variables)
    else:
        slots = 2 * nbytes(model.trainable_weights)
    last = 0
    if folder is not None and (latest := newest_state(folder)) is not None:
        last = int(latest.get("weights_bytes") or 0)
    return int(max(nbytes(model.weights) + slots, last) * SPACE_MARGIN) + SPACE_SLACK


def dtype_bytes(dtype: Any) -> int:
    name = str(getattr(dtype, "name", dtype))
    digits = "".join(c for c in name if c.isdigit())
    return max(1, int(digits) // 8) if digits else 4  # float32 -> 4, bfloat16 -> 2, int64 -> 8; bool -> 4


def save_checkpoint(folder: Path, model, state: dict[str, Any]) -> Path:
    """`model`'s weights and optimizer state and the loop's `state` as the slot `epoch-NNNNN`, whole or not at
    all: written into a temporary folder (weights fsync'd, their size and sha256 in state.json), renamed, then
    `latest` pointed at it; the slots beyond the last KEEP are removed. NoSpaceError (nothing left behind)
    when the disk cannot take it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_space(folder, expected_bytes(model, folder), "for the checkpoint", ROOM)
    tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}"
    slot = folder / f"epoch-{state['epoch']:05d}"
    try:
        with space_guard(folder, what="for the checkpoint", hint=ROOM):
            tmp.mkdir()
            with h5_written(tmp / WEIGHTS):
                model.save_weights(tmp / WEIGHTS)
            digest, size = synced_digest(tmp / WEIGHTS)
            write_text(tmp / STATE, json.dumps({**state, "weights_sha256": digest, "weights_bytes": size}))
            if slot.exists():
                shutil.rmtree(slot)
            os.replace(tmp, slot)
            fsync_dir(folder)
            write_text(folder / LATEST, slot.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune(folder, slot)
    return slot


def synced_digest(path: Path) -> tuple[str, int]:
    """The file's sha256 and size, once it is flushed to disk."""
    with open(path, "r+b") as f:
        os.fsync(f.fileno())
    return file_digest(path), path.stat().st_size


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MB):
            sha.update(chunk)
    return sha.hexdigest()


def prune(folder: Path, newest: Path) -> None:
    """Keep `newest` and the KEEP - 1 slots before it; later ones are of an abandoned past (a fallback)."""
    older = sorted(s for s in folder.glob("epoch-*") if s.name < newest.name)
    keep = {newest.name, *(s.name for s in older[len(older) - (KEEP - 1):])}
    for stale in folder.glob("epoch-*"):
        if stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)


# ---------------------------------------------------------------- reading

class Damaged(Exception):
    """A slot that cannot be resumed from; the message names the file and what is wrong with it."""


def slots(folder: Path) -> list[Path]:
    """The checkpoint slots to try, best first: the one `latest` points at, then the others, newest first."""
    found = sorted((s for s in folder.glob("epoch-*") if s.is_dir()), reverse=True)
    try:
        pointed = folder / (folder / LATEST).read_text().strip()
    except OSError:
        return found
    return [pointed, *(s for s in found if s != pointed)] if pointed in found else found


def read_slot(slot: Path) -> dict[str, Any]:
    """The slot's state, once state.json parses and the weights file is there and whole; else Damaged."""
    try:
        state = json.loads((slot / STATE).read_text())
    except FileNotFoundError:
        raise Damaged(f"{slot / STATE} is missing") from None
    except OSError as err:
        raise Damaged(f"{slot / STATE} cannot be read ({err.strerror or err})") from None
    except ValueError:
        raise Damaged(f"{slot / STATE} is damaged (not valid JSON)") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "result" not in state:
        raise Damaged(f"{slot / STATE} is damaged (no epoch or result)")
    weights = slot / WEIGHTS
    if not weights.is_file():
        raise Damaged(f"{weights} is missing")
    if "weights_sha256" not in state:  # an older nnlab's checkpoint: no checksum, check the header only
        with open(weights, "rb") as f:
            if f.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise Damaged(f"{weights} is damaged (not an HDF5 file)")
        return state
    size = weights.stat().st_size
    if size != state.get("weights_bytes", size):
        raise Damaged(f"{weights} is damaged ({size} bytes, {state['weights_bytes']} were written)")
    if file_digest(weights) != state["weights_sha256"]:
        raise Damaged(f"{weights} is damaged (its sha256 does not match the one recorded)")
    return state


def newest_state(folder: Path) -> dict[str, Any] | None:
    """state.json of the newest slot, unchecked (what the next checkpoint's size is judged by)."""
    for slot in slots(folder):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((slot / STATE).read_text())
            return state if isinstance(state, dict) else None
    return None


def load_checkpoint(folder: str | Path) -> tuple[dict[str, Any], Path] | None:
    """(state, weights file) of the newest usable checkpoint in `folder`, falling back to the older one (with a
    warning naming the damaged file) when the newest is damaged; None when there is none at all; NnlabError
    naming the files when none is usable."""
    folder = Path(folder)
    damaged = []
    for slot in slots(folder):
        try:
            state = read_slot(slot)
        except Damaged as why:
            damaged.append(str(why))
            continue
        if damaged:  # said once here, and kept in the state for the run's tag
            note = f"{'; '.join(damaged)}; resuming from the older checkpoint {slot.name} (epoch {state['epoch']})"
            log.warning("checkpoint: %s", note)
            state = {**state, "fallback": note}
        return state, slot / WEIGHTS
    if damaged:
        raise NnlabError(f"No usable checkpoint in {folder}: {'; '.join(damaged)}; the run cannot be resumed, "
                         "start it again.")
    return None


def restore_weights(model, weights: Path, optimizer: bool = True) -> None:
    """The weights and, with `optimizer`, the optimizer's state (its step count drives the learning-rate
    schedule). Without it the compiled optimizer stays fresh: a checkpoint from a stage's last epoch holds the
    finished stage's optimizer, whose moments, step count and variables are not the next stage's."""
    try:
        if not optimizer:
            model.load_weights(weights, objects_to_skip=[model.optimizer] if model.optimizer is not None else None)
            return
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(weights)
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise NnlabError(f"Cannot load the checkpoint {weights} into the model ({reason}); the run's config no "
                         "longer builds the model it saved, or the file is damaged: start the run again.") from err
