"""MLflow tracking: one run per job, which ends FINISHED, or FAILED with the error recorded.

Keras is not imported here: `nnlab report` and the sweep callback read and write the store without it. The
store itself (finding, checking, locking, opening it) is `nnlab.tracking.store`; the model's files and MLflow Model are
`nnlab.tracking.logged_model`.

Never lose a run: each run records the host and process that run it plus a heartbeat, so `nnlab runs --stale`
can tell a run whose process died; SIGTERM unwinds a job like Ctrl-C, so its run ends KILLED instead of staying
RUNNING."""

import math
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from nnlab.config import TrackingConfig
from nnlab.files import is_disk_full, space_guard
from nnlab.processes import process_start_time
from nnlab.errors import NnlabError
from nnlab.tracking.accounts import ACCOUNT_TAG, account  # noqa: F401  (track.process_start_time, as before)
from nnlab.tracking.datasets import (  # noqa: F401  (track.array_digest…, as before)
    DATA_CONTEXTS,
    DIGEST_SAMPLE_BYTES,
    array_digest,
    context_of,
    dataset_source,
    log_datasets,
)
from nnlab.tracking.logged_model import local_folder, log_model
from nnlab.tracking.delivery import end_run, outbox_folder, run_outbox, send_left_behind  # noqa: F401
from nnlab.tracking.outbox import Outbox
from nnlab.tracking.store import (  # noqa: F401  (the commands' track.find_store…)
    find_store,
    full_store_error,
    open_store,
    resolve_uri,
    store_is_full,
)

# Sweep bookkeeping: MLflow nests runs by PARENT_TAG; ours mark the sweep and a run's role in it.
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "nnlab.sweep_id"
ROLE_TAG = "nnlab.role"
# Who runs a run: `nnlab runs --stale` checks the process on this host, or the heartbeat from another one.
HOST_TAG = "nnlab.host"
PID_TAG = "nnlab.pid"
PID_STARTED_TAG = "nnlab.pid_started"  # the process's start (unix time): a reused pid is not the run's process
HEARTBEAT_TAG = "nnlab.heartbeat"  # unix time, refreshed with the epoch metrics
KILLED_REASON_TAG = "nnlab.killed_reason"
HEARTBEAT_EVERY_S = 60
MAX_PARAM_CHARS = 6000  # MLflow's limit for a param value
BATCH = 100  # MLflow's limit on params per log_batch call
MODEL_WAIT_S = 600  # how long the end of a job waits for a server that is down to log the model
# What the MLflow UI shows as a run's description.
NOTE_TAG = "mlflow.note.content"


def process_tags() -> dict[str, str]:
    """Host, process and first heartbeat of the run this process starts."""
    started = process_start_time(os.getpid())
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}
    if started is not None:
        tags[PID_STARTED_TAG] = str(int(started))
    return tags


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a scheduler's preemption) or SIGHUP, unwinding the job like Ctrl-C: the run
    is marked KILLED instead of staying RUNNING, and the CLI exits 130."""


def raise_terminated(signum, frame) -> None:
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


def install_signal_handlers() -> bool:
    """SIGTERM (and SIGHUP, unless something such as nohup set it aside) raise `Terminated` in this process's
    main thread. Idempotent; does nothing outside the main thread, where Python cannot set handlers. Returns
    whether the SIGTERM handler is in place."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not raise_terminated:
            signal.signal(signal.SIGTERM, raise_terminated)
        hup = getattr(signal, "SIGHUP", None)
        if hup is not None and signal.getsignal(hup) == signal.SIG_DFL:
            signal.signal(hup, raise_terminated)
    except ValueError:  # not the main interpreter's main thread
        return False
    return True


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.widths": "[256, 128]", ...}; lists stay whole so they compare as values."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def git_commit(cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class RunLogger:
    """Thin wrapper over MlflowClient that batches and never logs NaN as a silent zero."""

    def __init__(self, client: MlflowClient, run_id: str, held: ExitStack | None = None,
                 artifact_uri: str | None = None, outbox: Outbox | None = None):
        self.client, self.run_id, self.outbox = client, run_id, outbox
        self.waited = 0.0
        self.last_beat = time.monotonic()  # the run starts with a heartbeat tag
        self.held = held
        self.artifact_dir = local_folder(artifact_uri)
        self.end_status = "FINISHED"  # what a body that returns ends the run as (`fail`)

    def hold(self, context: AbstractContextManager) -> Any:
        """Enter `context` until the run's end is recorded (FINISHED, FAILED, KILLED), not merely until the body
        returns: the checkpoint folder's owner lock, so no second process takes a run over as it ends."""
        if self.held is None:
            raise RuntimeError("this RunLogger was not made by start_run; it cannot hold anything")
        return self.held.enter_context(context)

    def space_guard(self):
        """A full disk under the run's files (MLflow writes them in the temp folder, then copies them into the
        artifact folder): one sentence naming the fuller of the two."""
        return space_guard(tempfile.gettempdir(), self.artifact_dir, what="for the run's files",
                           hint="free some space there (TMPDIR and tracking.artifact_location choose the folders)")

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Time the job spends handing records to tracking: summed into `logging_seconds` at the run's end."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.waited += time.perf_counter() - start

    def batch(self, metrics: Sequence[Metric] = (), params: Sequence[Param] = (), tags: Sequence[RunTag] = ()) -> None:
        """Into the outbox where there is one (it sends in MLflow's batch sizes), else straight to the store."""
        with self.waiting():
            self.send(metrics, params, tags)

    def send(self, metrics: Sequence[Metric], params: Sequence[Param], tags: Sequence[RunTag]) -> None:
        if self.outbox is not None:
            self.outbox.batch(metrics, params, tags)
            return
        for i in range(0, max(len(metrics), len(params), len(tags)), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH], params=params[i : i + BATCH],
                                  tags=tags[i : i + BATCH])

    def params(self, params: Mapping[str, Any]) -> None:
        self.batch(params=[Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()])

    def tags(self, tags: Mapping[str, Any]) -> None:
        self.batch(tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at `step`; at most once a minute the heartbeat tag rides along in the same call."""
        now = int(1000 * time.time())
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]
        beat = []
        if time.monotonic() - self.last_beat >= HEARTBEAT_EVERY_S:
            self.last_beat = time.monotonic()
            beat = [RunTag(HEARTBEAT_TAG, str(now // 1000))]
        self.batch(metrics=items, tags=beat)

    def text(self, text: str, path: str) -> None:
        with self.waiting(), self.space_guard():
            if self.outbox is not None:
                self.outbox.text(text, path)
            else:
                self.client.log_text(self.run_id, text, path)

    def figure(self, fig, path: str) -> None:
        with self.waiting(), self.space_guard():
            if self.outbox is None:
                self.client.log_figure(self.run_id, fig, path)
                return
            with tempfile.TemporaryDirectory() as tmp:
                fig.savefig(Path(tmp) / Path(path).name)
                self.outbox.artifact(Path(tmp) / Path(path).name, os.path.dirname(path) or None)

    def file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        with self.waiting(), self.space_guard():
            if self.outbox is not None:
                self.outbox.artifact(local_path, artifact_dir)
            else:
                self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def epoch_logger(self):
        """A Keras callback logging each epoch's metrics and learning rate here (imports Keras on first use, so
        reading the store, e.g. for `nnlab report`, stays light)."""
        from nnlab.training.callbacks import EpochMetrics

        return EpochMetrics(self.metrics)

    def datasets(self, splits: Mapping[str, Any], name: str, source: str) -> None:
        """The training, validation and test data as MLflow dataset inputs (`datasets.log_datasets`)."""
        log_datasets(self.client, self.run_id, splits, name, source)

    def model(self, model, formats: Sequence[str] = ("keras",), export_dir: str | None = None,
              example: Any = None, serving: Any = None, name: str | None = None) -> str:
        """Save the model's files and log its MLflow Model (named `name`, e.g. the model's builder), all or nothing:
        `logged_model.log_model`. A server's run first waits for its outbox to drain (the server to be back after an
        outage, MODEL_WAIT_S at most): the MLflow Model is made by calls that cannot be queued."""
        if self.outbox is not None and self.outbox.flush(MODEL_WAIT_S):
            raise NnlabError(f"The tracking server did not take this run's queued records within {MODEL_WAIT_S} s, "
                             f"so its model cannot be logged; the checkpoint keeps the weights: `nnlab resume "
                             f"{self.run_id}` once the server is back.")
        return log_model(self.client, self.run_id, model, formats, export_dir, example, serving, name)

    def fail(self, reason: str) -> None:
        """End the run FAILED with `reason` as its `error` tag, though the body returns: the job that failed was
        another process's (a graded submission), not this one's."""
        self.tags({"error": reason})
        self.end_status = "FAILED"

    def note(self, text: str) -> None:
        """The run's description in the UI (`mlflow.note.content`)."""
        self.tags({NOTE_TAG: text})


@contextmanager
def start_run(tracking: TrackingConfig, tags: Mapping[str, Any], run_id: str | None = None) -> Iterator[RunLogger]:
    """One MLflow run around the body: FINISHED, FAILED with the error (tag `error`, `error.txt`), or KILLED on
    an interruption (Ctrl-C, SIGTERM once `install_signal_handlers` ran). With `run_id`, that run is reopened
    (RUNNING again, with this process's host/pid tags): `nnlab resume`. What the body `hold`s is released
    once the run's end is recorded. A store that fills up ends in one sentence (`full_store_error`)."""
    uri, client, experiment_id = open_store(tracking.uri, tracking.experiment, tracking.artifact_location)
    mlflow.set_tracking_uri(uri)
    all_tags = {**{k: str(v) for k, v in tags.items() if v is not None}, **tracking.tags, **process_tags()}
    if account(uri):
        all_tags[ACCOUNT_TAG] = account(uri)
    started = run_id
    try:
        if run_id is not None and "error" in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, "error")  # the interruption that stopped it is history now
        if run_id is not None:
            send_left_behind(client, run_id)  # before the run is RUNNING again: an old end must not follow it
        with ExitStack() as held:
            run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                                   run_name=None if run_id else tracking.run_name, tags=all_tags,
                                   log_system_metrics=True if tracking.system_metrics else None)
            started = run.info.run_id
            logger = RunLogger(client, started, held, run.info.artifact_uri, run_outbox(uri, client, started))
            status = "FINISHED"
            try:
                yield logger
                status = logger.end_status
                logger.metrics({"logging_seconds": logger.waited})  # what the job waited on tracking, in all
            except BaseException as err:
                # Keep the why with the run, and call an interruption KILLED.
                # (SystemExit: a scheduler's signal handler that requeues the job, e.g. submitit's, then exits.)
                status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
                record_error(logger, err)
                raise
            finally:
                end_run(logger, status, uri)
    except Exception as err:
        if not store_is_full(err):
            raise
        status = None
        if started is not None:
            with suppress(Exception):  # reading a full store still works; if not, the sentence says "unrecorded"
                status = client.get_run(started).info.status
        raise full_store_error(uri, started, status) from err


def record_error(logger: RunLogger, err: BaseException) -> None:
    """The error as the run's `error` tag and `error.txt`; skipped when the store (or its disk) is full."""
    try:
        logger.tags({"error": f"{type(err).__name__}: {err}"[:5000]})
        logger.text("".join(traceback.format_exception(err)), "error.txt")
    except Exception as failed:
        if not (store_is_full(failed) or is_disk_full(failed)):
            raise

