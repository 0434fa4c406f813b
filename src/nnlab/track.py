"""MLflow tracking: one run per job, which ends FINISHED, or FAILED with the error recorded.

Keras is not imported here: `nnlab report` and the sweep callback read and write the store without it.

Never lose a run: the store is checked before any data is loaded (an unreachable server or an unwritable
SQLite folder fails in seconds, naming it); a new SQLite store is created under a file lock, so processes
started together do not race on its schema; each run records the host and process that run it plus a
heartbeat, so `nnlab runs --stale` can tell a run whose process died; SIGTERM unwinds a job like Ctrl-C, so its
run ends KILLED instead of staying RUNNING."""

import contextlib
import hashlib
import io
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnlab.config import TrackingConfig
from nnlab.errors import NnlabError
from nnlab.files import fsync_dir

log = logging.getLogger(__name__)

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
PROBE_TIMEOUT_S = 5  # connecting to a tracking server; its answer gets PROBE_TIMEOUT_S - 1 more
LOCK_TIMEOUT_S = 300  # waiting for another process to create or migrate a SQLite store
# What the MLflow UI reads: the experiment's kind ("Model training", not GenAI) and a run's description.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
# The MLflow Model's name: `runs:/<run id>/model` (and `models:/<model id>`). Its files live in the logged
# model's own artifact folder; MLflow merges them with the run's `model/` folder (model.keras, model.h5) when the
# run's `model` path is downloaded or listed (no file name is in both). Listing it looks the logged model up
# through MLflow's global tracking URI, so that must be the run's store (`find_store` sees to it).
MODEL_NAME = "model"
DATA_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}  # mlflow.data.context values
DIGEST_SAMPLE_BYTES = 4 << 20  # a dataset digest hashes shape, dtype and at most this many bytes of rows


def resolve_uri(uri: str) -> str:
    """Make a relative SQLite or file store absolute, so every process of a sweep shares one store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def default_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def find_store(uri: str | None) -> str:
    """An existing store for the commands that read one (report, runs, resume, predict, evaluate): --uri, else
    $MLFLOW_TRACKING_URI, else ./mlflow.db; checked, and one sentence when it is not there. It also becomes
    MLflow's current tracking URI: parts of MLflow 3.17 ignore a client's own URI and use that one (listing a
    run's `model/` folder, which merges in the logged model's files; registering a `models:/<id>` source)."""
    uri = resolve_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise NnlabError(f"No MLflow store at {uri.removeprefix('sqlite:///')}; run the command where the runs were "
                         "made, or name the store with --uri sqlite:///path/to/mlflow.db (or MLFLOW_TRACKING_URI).")
    uri = check_store(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a (resolved) sqlite:/// URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


_checked: set[str] = set()  # stores this process has already found usable


def check_store(uri: str) -> str:
    """Fail in seconds, with one sentence naming it, when the store cannot be used: a tracking server that does
    not answer within PROBE_TIMEOUT_S, a SQLite file or folder that cannot be written. Returns the resolved
    URI. Call it before loading data: MLflow itself retries an unreachable server for minutes."""
    uri = resolve_uri(uri)
    if uri in _checked:
        return uri
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif uri.startswith("sqlite:///"):
        check_writable(sqlite_path(uri), is_file=True)
    elif uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        check_writable(Path(unquote(urlparse(uri).path)), is_file=False)
    _checked.add(uri)
    return uri


def check_server(uri: str) -> None:
    """Any HTTP answer from `<uri>/health` will do (a proxy's 401 too); no answer is the error."""
    import requests
    from mlflow.environment_variables import MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH

    verify: bool | str = MLFLOW_TRACKING_SERVER_CERT_PATH.get() or not MLFLOW_TRACKING_INSECURE_TLS.get()
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=(PROBE_TIMEOUT_S, PROBE_TIMEOUT_S - 1), verify=verify)
    except requests.RequestException as err:
        raise NnlabError(f"The MLflow server at {uri} cannot be reached ({probe_reason(err)}); start it, or point "
                         "tracking.uri (or --uri) at a reachable server or at a sqlite:///path/mlflow.db file."
                         ) from err


def probe_reason(err: Exception) -> str:
    import requests

    if isinstance(err, requests.Timeout):
        return f"no answer within {PROBE_TIMEOUT_S} s"
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(err))  # the socket's own words: "Connection refused"
    if found:
        return found[-1].strip().rstrip(".")
    return type(err).__name__


def check_writable(path: Path, is_file: bool) -> None:
    """The folder exists (or can be made) and takes a new file; an existing database file opens for writing."""
    folder = path.parent if is_file else path
    step = f"cannot create the folder {folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if is_file and path.exists():
            step = "cannot open it for writing"
            with open(path, "r+b"):
                pass
        step = f"cannot create files in {folder}"
        with tempfile.TemporaryFile(dir=folder, prefix=".nnlab-probe-"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise NnlabError(f"Cannot write the MLflow store {path}: {step} ({reason}); point tracking.uri (or --uri) "
                         "at a writable place, e.g. tracking.uri=sqlite:///mlflow.db in the working directory."
                         ) from err


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a process first opens a SQLite store: MLflow creates and migrates a new store's tables on
    first use, and processes doing that at the same time break it for good. Other stores need no lock."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as err:
        raise NnlabError(f"Waited {LOCK_TIMEOUT_S} s for {path}.lock, held by another process creating the MLflow "
                         "store; let it finish, or stop it.") from err
    try:
        yield
    finally:
        lock.release()


def open_store(uri: str, experiment: str, artifact_location: str | None = None) -> tuple[str, MlflowClient, str]:
    """(resolved uri, client, experiment id): the store checked, created or migrated by one process at a time,
    and the experiment made if missing. Every process's first use of a store goes through here."""
    uri = check_store(uri)
    location = artifact_location or default_artifact_location(uri)
    with store_lock(uri):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, experiment, location)
    return uri, client, experiment_id


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, made if missing; tagged as model training (the UI's "Model training" view, not
    GenAI), also where an existing experiment lacks the tag (one that names another kind keeps it)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as err:  # another process (on a server: no lock) created it first
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or client.get_experiment_by_name(name) is None:
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (unix time, about 1 s precise), from /proc; None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


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


def git_commit(cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class RunLogger:
    """Thin wrapper over MlflowClient that batches and never logs NaN as a silent zero."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id
        self.last_beat = time.monotonic()  # the run starts with a heartbeat tag

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
        self.client.log_text(self.run_id, text, path)

    def figure(self, fig, path: str) -> None:
        self.client.log_figure(self.run_id, fig, path)

    def file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def epoch_logger(self):
        """A Keras callback logging each epoch's metrics and learning rate here (imports Keras on first use, so
        reading the store, e.g. for `nnlab report`, stays light)."""
        from nnlab.callbacks import EpochMetrics

        return EpochMetrics(self.metrics)

    def datasets(self, splits: Mapping[str, Any], name: str, source: str) -> None:
        """The training, validation and test data as MLflow dataset inputs (the UI's Datasets column):
        `splits` maps train/val/test to (x, y) or None; each is logged as "<name>-<split>" with its context
        (training, validation, test), the source it came from and a digest of a sample (`array_digest`)."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        origin = dataset_source(source)
        inputs = []
        for split, arrays in splits.items():
            if arrays is None:
                continue
            x, y = arrays
            dataset = mlflow.data.from_numpy(x, source=origin, targets=y, name=f"{name}-{split}",
                                             digest=array_digest(x, y))
            inputs.append(DatasetInput(dataset._to_mlflow_entity(),
                                       [InputTag(MLFLOW_DATASET_CONTEXT, DATA_CONTEXTS.get(split, split))]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def model(self, model, formats: Sequence[str] = ("keras",), export_dir: str | None = None,
              example: Any = None, serving: Any = None) -> str:
        """Save as model.keras (and model.h5, the legacy format Netron and older tools read) into the run's
        `model/` folder, and into `export_dir` too when given (a stable path, e.g. for model.weights of a later
        transfer run); and log an MLflow Model named "model" (Keras flavor) of `serving` (an inference copy that
        loads without nnlab; default: the model itself), with a signature and an input example from `example`
        (a few input rows). Returns the MLflow Model's id (`models:/<id>`).

        All or nothing: every file is written to a private folder first, and an MLflow Model whose logging
        fails is deleted again, so a failed save leaves neither files nor a model in the run."""
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for fmt in formats:
                paths.append(Path(tmp) / f"model.{fmt}")
                model.save(paths[-1])
            model_id = self.mlflow_model(serving if serving is not None else model, example)
            try:
                for path in paths:
                    self.file(path, "model")
            except BaseException:
                discard_logged_model(self.client, model_id)
                raise
            if export_dir:
                for path in paths:
                    export(path, Path(export_dir).expanduser())
        return model_id

    def mlflow_model(self, model, example: Any = None) -> str:
        """Log `model` as the MLflow Model MODEL_NAME of this run, with MLflow's Keras flavor: a signature
        inferred from `example` and the model's predictions on it, `example` as the input example, pinned
        requirements (no subprocess to infer them). A model whose logging fails is marked FAILED and deleted
        (the UI then lists none); the error stands."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.models import Model, infer_signature

        signature = None
        if example is not None:
            import keras

            predictions = keras.ops.convert_to_numpy(model.predict(example, verbose=0))
            signature = infer_signature(example, predictions)
        before = self.model_ids()
        try:
            # What mlflow.keras.log_model does, with KERAS_FLAVOR instead of the mlflow.keras module. MLflow
            # checks the input example by predicting on it, and Keras draws a progress bar: not for the console.
            with contextlib.redirect_stdout(io.StringIO()):
                info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=KERAS_FLAVOR, model=model,
                                 run_id=self.run_id, signature=signature, input_example=example,
                                 pip_requirements=model_requirements())
        except BaseException:
            for model_id in self.model_ids() - before:  # MLflow creates and links it before saving the files
                discard_logged_model(self.client, model_id)
            raise
        self.client.finalize_logged_model(info.model_id, LoggedModelStatus.READY)
        return info.model_id

    def model_ids(self) -> set[str]:
        """The ids of the logged models linked to this run as its outputs."""
        outputs = self.client.get_run(self.run_id).outputs
        return {o.model_id for o in outputs.model_outputs} if outputs is not None else set()

    def note(self, text: str) -> None:
        """The run's description in the UI (`mlflow.note.content`)."""
        self.tags({NOTE_TAG: text})


def discard_logged_model(client: MlflowClient, model_id: str) -> None:
    """Mark a logged model FAILED and delete it (the UI lists it no more), on the way out of a failed save."""
    from mlflow.entities import LoggedModelStatus

    with contextlib.suppress(MlflowException):
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    with contextlib.suppress(MlflowException):
        client.delete_logged_model(model_id)


def save_keras_model(path: str, **kwargs) -> None:
    """mlflow.keras.save_model into a folder made first: MLflow 3.17's writes the input example before it creates
    the folder, so log_model with an input example fails (FileNotFoundError: .../model/input_example.json;
    mlflow/mlflow#16183, open). It never checks that the folder is new, so making it first is all it takes."""
    import mlflow.keras

    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# mlflow.keras as Model.log sees a flavor: its name (the logged model's flavor) and save_model.
KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=save_keras_model)


def model_requirements() -> list[str]:
    """What serving the model needs, pinned to this environment: Keras and its backend's packages, under their
    installed distribution names (tensorflow-cpu, jax + jaxlib…). MLflow adds itself. (Without this, MLflow
    loads the model in a subprocess to infer them: seconds per run.)"""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    import keras

    modules = {"tensorflow": ["tensorflow"], "jax": ["jax", "jaxlib"], "torch": ["torch"]}
    provided = packages_distributions()
    pinned = []
    for module in ["keras", *modules.get(keras.backend.backend(), [])]:
        for dist in dict.fromkeys(provided.get(module, [module])):
            try:
                pinned.append(f"{dist}=={version(dist)}")
            except PackageNotFoundError:  # not installed under that name: leave it unpinned
                pinned.append(dist)
    return pinned


def export(path: Path, folder: Path) -> None:
    """Copy `path` into `folder` durably: written beside the target, flushed to disk, then renamed, so the file
    under its final name is whole, even after a crash or a power cut."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{path.name}.partial"
    try:
        with open(path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(partial, folder / path.name)
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(folder)


@contextmanager
def start_run(tracking: TrackingConfig, tags: Mapping[str, Any], run_id: str | None = None) -> Iterator[RunLogger]:
    """One MLflow run around the body: FINISHED, FAILED with the error (tag `error`, `error.txt`), or KILLED on
    an interruption (Ctrl-C, SIGTERM once `install_signal_handlers` ran). With `run_id`, that run is reopened
    (RUNNING again, with this process's host/pid tags): `nnlab resume`."""
    uri, client, experiment_id = open_store(tracking.uri, tracking.experiment, tracking.artifact_location)
    mlflow.set_tracking_uri(uri)
    all_tags = {**{k: str(v) for k, v in tags.items() if v is not None}, **tracking.tags, **process_tags()}
    if run_id is not None and "error" in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, "error")  # the interruption that stopped it is history now
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                          run_name=None if run_id else tracking.run_name, tags=all_tags,
                          log_system_metrics=True if tracking.system_metrics else None) as run:
        logger = RunLogger(client, run.info.run_id)
        try:
            yield logger
        except BaseException as err:
            # mlflow.start_run marks any exception FAILED; keep the why with it, and call an interruption KILLED.
            logger.tags({"error": f"{type(err).__name__}: {err}"[:5000]})
            logger.text("".join(traceback.format_exception(err)), "error.txt")
            if isinstance(err, KeyboardInterrupt):
                mlflow.end_run("KILLED")
            raise

