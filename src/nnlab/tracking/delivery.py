"""How a run's records reach its store, and how its end is recorded: straight into a local store, or through an
outbox (`nnlab.tracking.outbox`) to a tracking server, so that training never waits on the server and an outage
loses nothing. The outbox of a run lives apart from the job's folders (a sweep's jobs, a resume and
`nnlab runs --sync` all find it by the run's id)."""

import os
import shutil
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.tracking.accounts import redact
from nnlab.tracking.outbox import Outbox
from nnlab.tracking.outbox import sync as outbox_sync

DRAIN_S, KILLED_DRAIN_S = 60, 3  # how long a run's end waits for its outbox to reach the server


def outbox_root() -> Path:
    """$NNLAB_OUTBOX_DIR, by default ~/.cache/nnlab/outbox: one folder per run, named by its id."""
    return Path(os.environ.get("NNLAB_OUTBOX_DIR") or "~/.cache/nnlab/outbox").expanduser()


def outbox_folder(run_id: str) -> Path:
    return outbox_root() / run_id


def run_outbox(uri: str, client: MlflowClient, run_id: str) -> Outbox | None:
    """A tracking server's run logs through an outbox (training never waits on the server); a local store, whose
    writes are as quick as the disk, directly."""
    if not uri.startswith(("http://", "https://")):
        return None
    return Outbox(outbox_folder(run_id), client, run_id).start()


def send_left_behind(client: MlflowClient, run_id: str) -> None:
    """What an earlier process of the run left in its outbox, sent first; one sentence where it cannot be."""
    if not (outbox_folder(run_id) / "outbox.jsonl").exists():
        return
    left = outbox_sync(outbox_folder(run_id), client, run_id, DRAIN_S)
    if left:
        raise NnlabError(f"{left} records of run {run_id} queued by its last process could not be sent within "
                         f"{DRAIN_S} s ({outbox_folder(run_id)}); check the server, then try again.")


def end_run(logger, status: str, uri: str) -> None:
    """Record the run's end: directly for a local store; for a server, after what the outbox holds (waiting a
    minute at most, seconds for an interruption). What the server has not taken stays queued on disk, the end
    last, for `nnlab runs --sync` or `nnlab resume`."""
    box = logger.outbox
    if box is None:
        mlflow.end_run(status)
        return
    left = box.flush(DRAIN_S if status != "KILLED" else KILLED_DRAIN_S)
    if left == 0:
        try:
            mlflow.end_run(status)
            box.close(0)
            shutil.rmtree(box.folder, ignore_errors=True)  # everything arrived: nothing to keep
            return
        except Exception:  # noqa: BLE001  (the server went away just now: the outbox records the end instead)
            pass
    box.terminate(status)
    forget_active_run()
    left = box.close(1)
    if left:
        print(f"nnlab: the tracking server at {redact(uri)} has not taken {left} records of run {logger.run_id} "
              f"(its end included); they wait in {box.folder}: `nnlab runs --sync --uri {redact(uri)}` or "
              f"`nnlab resume {logger.run_id}` sends them.", file=sys.stderr)


def forget_active_run() -> None:
    """End MLflow's current run in this process without a call to the server (which is down: the outbox records
    the end). MLflow's `end_run` would send it, waiting on the server."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack:
        run = stack.pop()
        fluent.MLFLOW_RUN_ID.unset()
        fluent.run_id_to_system_metrics_monitor.pop(run.info.run_id, None)


def sync_all(client: MlflowClient) -> tuple[int, int, int]:
    """`nnlab runs --sync`: send every outbox whose run is in this store and whose job has ended (a running job
    sends its own). Returns (runs whose records all arrived, records still queued, outboxes of other stores)."""
    from filelock import FileLock, Timeout
    from mlflow.exceptions import MlflowException

    done = left = elsewhere = 0
    folders = sorted(p for p in outbox_root().iterdir() if (p / "outbox.jsonl").exists()) \
        if outbox_root().is_dir() else []
    for folder in folders:
        try:
            client.get_run(folder.name)
        except MlflowException:
            elsewhere += 1
            continue
        try:
            with FileLock(folder / "outbox.lock", timeout=0):
                pass
        except Timeout:
            continue  # its job is still running, and sending it
        still = outbox_sync(folder, client, folder.name, DRAIN_S)
        left += still
        if still == 0:
            done += 1
            shutil.rmtree(folder, ignore_errors=True)
    return done, left, elsewhere
