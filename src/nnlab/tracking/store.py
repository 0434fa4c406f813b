"""The MLflow store: where it is, whether it can be used, and opening it.

Never lose a run: the store is checked before any data is loaded (an unreachable server or an unwritable SQLite
folder fails in seconds, naming it), and a new SQLite store is created under a file lock, so processes started
together do not race on its schema. Keras is not imported here.
"""

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnlab.config import DEFAULT_STORE
from nnlab.errors import NnlabError
from nnlab.files import NoSpaceError, free_bytes, is_disk_full, megabytes
from nnlab.tracking.accounts import experiment_by_name, own_experiment, redact

PROBE_TIMEOUT_S = 5  # connecting to a tracking server; its answer gets PROBE_TIMEOUT_S - 1 more
LOCK_TIMEOUT_S = 300  # waiting for another process to create or migrate a SQLite store
# What the MLflow UI reads: the experiment's kind ("Model training", not GenAI).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# What SQLite says when the store cannot grow (SQLITE_FULL): MLflow logs it with the SQL, then raises it.
STORE_FULL = "database or disk is full"


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
    uri = resolve_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise NnlabError(f"No MLflow store at {uri.removeprefix('sqlite:///')}; run the command where the runs were "
                         "made, or name the store with --uri sqlite:///path/to/mlflow.db (or MLFLOW_TRACKING_URI).")
    uri = check_store(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def client(uri: str | None) -> MlflowClient:
    """A client on the store a command reads (`find_store`: --uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db)."""
    return MlflowClient(find_store(uri))


def get_run(client: MlflowClient, run_id: str) -> Run:
    """The run, or one sentence saying that this store has no such run."""
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise NnlabError(f"No run '{run_id}' in this store, {redact(client.tracking_uri)} ({err.error_code}); copy the "
                         "run's id from `mlflow ui`, `nnlab runs` or the job's console output.") from err


def run_text(client: MlflowClient, run_id: str, path: str) -> str:
    """A text artifact of the run (its config.yaml, preprocessing.json…)."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def run_config(client: MlflowClient, run_id: str) -> str:
    """The run's resolved config.yaml, as the job logged it; one sentence where the run has none."""
    if "config.yaml" not in {a.path for a in client.list_artifacts(run_id)}:
        raise NnlabError(f"Run {run_id} has no config.yaml, so its config is unknown; use a run nnlab logged.")
    return run_text(client, run_id, "config.yaml")


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
    quiet_full_store()
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
    from mlflow.environment_variables import (
        MLFLOW_TRACKING_INSECURE_TLS,
        MLFLOW_TRACKING_SERVER_CERT_PATH,
    )

    verify: bool | str = MLFLOW_TRACKING_SERVER_CERT_PATH.get() or not MLFLOW_TRACKING_INSECURE_TLS.get()
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=(PROBE_TIMEOUT_S, PROBE_TIMEOUT_S - 1), verify=verify)
    except requests.RequestException as err:
        raise NnlabError(f"The MLflow server at {redact(uri)} cannot be reached ({probe_reason(err)}); start it, or point "
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
    with store_lock(uri), full_store_guard(uri):
        client = MlflowClient(uri)
        experiment_id = ensure_experiment(client, experiment_name(client, uri, experiment), location)
    return uri, client, experiment_id


def experiment_name(client: MlflowClient, uri: str, experiment: str) -> str:
    """`own_experiment`, but an account's experiment that exists is taken as named (a teacher grading into a
    student's `<student>/course`): the server's permissions decide who may log there; no one can create one."""
    if "/" in experiment and experiment_by_name(client, experiment) is not None:
        return experiment
    return own_experiment(uri, experiment)


def store_is_full(err: BaseException | None) -> bool:
    """Whether `err` (or what it was raised from or during) is the store's disk being full: SQLite's "database
    or disk is full", or the OS's ENOSPC from a file store."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if STORE_FULL in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def full_store_error(uri: str, run_id: str | None = None, status: str | None = None) -> NoSpaceError:
    """One sentence for a full store: its file, the free space, and what became of the run."""
    from urllib.parse import unquote, urlparse

    path = sqlite_path(uri) or (Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else None)
    where = f"{path} is full ({megabytes(free_bytes(path.parent))} free on its disk)" if path else f"at {redact(uri)} is full"
    if run_id is None:
        then = "no run was started"
    elif status == "RUNNING":
        then = (f"run {run_id} stays RUNNING, as the store cannot record its end: once there is room, `nnlab resume "
                f"{run_id}` continues it from its last checkpoint (or `nnlab runs --stale --kill` closes it)")
    else:
        then = f"run {run_id} ended {status or 'unrecorded'}"
    return NoSpaceError(f"The MLflow store {where}; free some space there or point tracking.uri at a larger disk; "
                        f"{then}.")


@contextmanager
def full_store_guard(uri: str) -> Iterator[None]:
    """A full store met inside becomes `full_store_error` (no run yet)."""
    try:
        yield
    except NnlabError:
        raise
    except Exception as err:
        if store_is_full(err) or (is_disk_full(err) and not uri.startswith(("http://", "https://"))):
            raise full_store_error(uri) from err
        raise


class HideFullStore(logging.Filter):
    """MLflow logs a full store's error with its SQL statement and parameters before raising it; nnlab says it in
    one sentence instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return STORE_FULL not in record.getMessage()


def quiet_full_store() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, HideFullStore) for f in logger.filters):
        logger.addFilter(HideFullStore())


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, made if missing; tagged as model training (the UI's "Model training" view, not
    GenAI), also where an existing experiment lacks the tag (one that names another kind keeps it)."""
    experiment = experiment_by_name(client, name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as err:  # another process (on a server: no lock) created it first
            experiment = experiment_by_name(client, name) if err.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return experiment.experiment_id
