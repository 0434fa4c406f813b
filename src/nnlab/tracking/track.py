"""MLflow tracking: one run per job, which ends FINISHED, or FAILED with the error recorded.

Keras is not imported here: `nnlab report` and the sweep callback read and write the store without it. The
store itself (finding, checking, locking, opening it) is `nnlab.tracking.store`; the model's files and MLflow Model are
`nnlab.tracking.logged_model`.

Never lose a run: each run records the host and process that run it plus a heartbeat, so `nnlab runs --stale`
can tell a run whose process died; SIGTERM unwinds a job like Ctrl-C, so its run ends KILLED instead of staying
RUNNING."""

import hashlib
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
from nnlab.processes import process_start_time  # noqa: F401  (track.process_start_time, as before)
from nnlab.tracking.logged_model import local_folder, log_model
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
# What the MLflow UI shows as a run's description.
NOTE_TAG = "mlflow.note.content"
DATA_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}  # mlflow.data.context values
DIGEST_SAMPLE_BYTES = 4 << 20  # a dataset digest hashes shape, dtype and at most this many bytes of rows


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


def dataset_source(source: str):
    """An MLflow dataset source: a local path (a file or folder the data was read from), or where the data has
    no files of its own (bundled, generated) a code source that says so."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if not os.path.isabs(source):
        return CodeDatasetSource({"nnlab.data_origin": source})
    with warnings.catch_warnings():  # "" and "file" URIs both resolve to a local source, and MLflow says so
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(source)


def array_digest(*arrays: Any, budget: int = DIGEST_SAMPLE_BYTES) -> str:
    """A dataset fingerprint that stays cheap for big (or memory-mapped) image arrays: each array's shape and
    dtype, plus evenly spaced rows (the first and last among them) up to `budget` bytes per array."""
    import numpy as np

    sha = hashlib.sha256()
    for array in arrays:
        if array is None:
            continue
        array = np.asarray(array)
        sha.update(f"{array.shape}|{array.dtype.str}|".encode())
        if array.ndim == 0 or len(array) == 0:
            sha.update(np.ascontiguousarray(array).tobytes())
            continue
        rows = max(1, min(len(array), budget // max(1, array[0].nbytes)))
        picked = array if rows == len(array) else array[np.linspace(0, len(array) - 1, rows).round().astype(int)]
        sha.update(np.ascontiguousarray(picked).tobytes())
    return sha.hexdigest()[:16]


def context_of(dataset_input) -> str | None:
    """A dataset input's context (training, validation, test), from its tag."""
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return next((t.value for t in dataset_input.tags if t.key == MLFLOW_DATASET_CONTEXT), None)


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
                 artifact_uri: str | None = None):
        self.client, self.run_id = client, run_id
        self.last_beat = time.monotonic()  # the run starts with a heartbeat tag
        self.held = held
        self.artifact_dir = local_folder(artifact_uri)

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

    def params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + BATCH])

    def tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        self.client.log_batch(self.run_id, tags=items)

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at `step`; at most once a minute the heartbeat tag rides along in the same call."""
        now = int(1000 * time.time())
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]
        beat = []
        if time.monotonic() - self.last_beat >= HEARTBEAT_EVERY_S:
            self.last_beat = time.monotonic()
            beat = [RunTag(HEARTBEAT_TAG, str(now // 1000))]
        for i in range(0, max(len(items), len(beat)), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000], tags=beat if i == 0 else [])

    def text(self, text: str, path: str) -> None:
        with self.space_guard():
            self.client.log_text(self.run_id, text, path)

    def figure(self, fig, path: str) -> None:
        with self.space_guard():
            self.client.log_figure(self.run_id, fig, path)

    def file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        with self.space_guard():
            self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def epoch_logger(self):
        """A Keras callback logging each epoch's metrics and learning rate here (imports Keras on first use, so
        reading the store, e.g. for `nnlab report`, stays light)."""
        from nnlab.training.callbacks import EpochMetrics

        return EpochMetrics(self.metrics)

    def datasets(self, splits: Mapping[str, Any], name: str, source: str) -> None:
        """The training, validation and test data as MLflow dataset inputs (the UI's Datasets column):
        `splits` maps train/val/test to (x, y) or None; each is logged as "<name>-<split>" with its context
        (training, validation, test), the source it came from and a digest of a sample (`array_digest`).
        Inputs the run already has are left out: `nnlab resume` logs the data of the run it reopens again."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        origin, have = dataset_source(source), self.dataset_inputs()
        inputs = []
        for split, arrays in splits.items():
            if arrays is None:
                continue
            x, y = arrays
            key = (f"{name}-{split}", array_digest(x, y), DATA_CONTEXTS.get(split, split))
            if key in have:
                continue
            dataset = mlflow.data.from_numpy(x, source=origin, targets=y, name=key[0], digest=key[1])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, key[2])]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def dataset_inputs(self) -> set[tuple[str, str, str | None]]:
        """(name, digest, context) of each dataset input the run has."""
        inputs = self.client.get_run(self.run_id).inputs
        return {(i.dataset.name, i.dataset.digest, context_of(i)) for i in (inputs.dataset_inputs if inputs else [])}

    def model(self, model, formats: Sequence[str] = ("keras",), export_dir: str | None = None,
              example: Any = None, serving: Any = None, name: str | None = None) -> str:
        """Save the model's files and log its MLflow Model (named `name`, e.g. the model's builder), all or nothing:
        `logged_model.log_model`."""
        return log_model(self.client, self.run_id, model, formats, export_dir, example, serving, name)

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
    started = run_id
    try:
        if run_id is not None and "error" in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, "error")  # the interruption that stopped it is history now
        with ExitStack() as held, mlflow.start_run(
                run_id=run_id, experiment_id=None if run_id else experiment_id,
                run_name=None if run_id else tracking.run_name, tags=all_tags,
                log_system_metrics=True if tracking.system_metrics else None) as run:
            started = run.info.run_id
            logger = RunLogger(client, run.info.run_id, held, run.info.artifact_uri)
            try:
                yield logger
            except BaseException as err:
                # mlflow.start_run marks any exception FAILED; keep the why with it, and call an interruption KILLED.
                record_error(logger, err)
                if isinstance(err, KeyboardInterrupt):
                    mlflow.end_run("KILLED")
                raise
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

