"""The MLflow store: checked before a job loads data, created once when many processes start together."""

import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from nnlab.config import TrackingConfig
from nnlab.errors import NnlabError
from nnlab.tracking import track
from nnlab.tracking.store import EXPERIMENT_KIND_TAG, check_store, open_store, resolve_uri

WRITER = """
import sys
from nnlab.tracking import track
from nnlab.config import TrackingConfig

uri, i = sys.argv[1], int(sys.argv[2])
with track.start_run(TrackingConfig(uri=uri, experiment="race", run_name=f"writer{i}"), {}) as run:
    for step in range(100):
        run.metrics({"m": float(step)}, step=step)
"""


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_eight_processes_on_a_brand_new_sqlite_store_all_finish_with_every_metric_point(tmp_path):
    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, store, str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(8)]
    outputs = [w.communicate(timeout=600) for w in writers]
    failed = [err.strip().splitlines()[-1:] for w, (_, err) in zip(writers, outputs) if w.returncode != 0]
    assert failed == []
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer{i}" for i in range(8)]
    assert [r.info.status for r in runs] == ["FINISHED"] * 8
    points = sum(len(client.get_metric_history(r.info.run_id, "m")) for r in runs)
    assert points == 800


def probes(monkeypatch) -> list[tuple[str, object]]:
    """Every HTTP GET nnlab's store check makes (url, timeout); MLflow's own REST calls (which retry for
    minutes) fail the test."""
    import requests
    from mlflow.utils import rest_utils

    made, get = [], requests.get

    def recorded(url, *args, **kwargs):
        made.append((url, kwargs.get("timeout")))
        return get(url, *args, **kwargs)

    def no_mlflow_call(*args, **kwargs):
        raise AssertionError("MLflow's retrying REST client was used on an unreachable server")

    monkeypatch.setattr(requests, "get", recorded)
    monkeypatch.setattr(rest_utils, "http_request", no_mlflow_call)
    return made


def test_an_unreachable_tracking_server_fails_after_one_bounded_probe_naming_the_url(monkeypatch):
    from nnlab.tracking.store import PROBE_TIMEOUT_S

    made = probes(monkeypatch)
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(NnlabError) as err:
        check_store(uri)
    assert made == [(f"{uri}/health", (PROBE_TIMEOUT_S, PROBE_TIMEOUT_S - 1))]
    assert uri in str(err.value) and "\n" not in str(err.value)


def test_start_run_on_an_unreachable_server_fails_on_the_probe_before_the_body_runs(monkeypatch):
    made = probes(monkeypatch)
    uri = f"http://127.0.0.1:{closed_port()}"
    body = []
    with pytest.raises(NnlabError, match=uri.replace(".", r"\.")), \
            track.start_run(TrackingConfig(uri=uri, experiment="x"), {}):
        body.append(1)
    assert body == [] and [url for url, _ in made] == [f"{uri}/health"]


def test_an_unwritable_sqlite_path_fails_before_mlflow_opens_it_naming_the_path(monkeypatch):
    import mlflow.tracking

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", None)  # check_store must not need a client
    with pytest.raises(NnlabError) as err:
        check_store("sqlite:////proc/x.db")
    assert "/proc/x.db" in str(err.value) and "\n" not in str(err.value)


def test_a_sqlite_store_under_a_file_names_the_store_path(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(NnlabError, match=str(tmp_path / "plain" / "mlflow.db")):
        check_store(f"sqlite:///{tmp_path / 'plain' / 'mlflow.db'}")


def test_check_store_returns_the_resolved_uri_and_creates_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_store("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert (tmp_path / "runs").is_dir() and not (tmp_path / "runs" / "mlflow.db").exists()
    assert list((tmp_path / "runs").iterdir()) == []  # the write probe left nothing


def test_open_store_takes_the_lock_beside_the_database_and_makes_the_experiment(tmp_path):
    uri, client, experiment_id = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp")
    assert (tmp_path / "mlflow.db.lock").exists()
    assert client.get_experiment_by_name("exp").experiment_id == experiment_id
    assert open_store(uri, "exp")[2] == experiment_id  # a second process finds it


def test_a_held_store_lock_makes_another_opener_wait_until_it_is_released(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    released = tmp_path / "released"
    open_store(uri, "exp")  # the store exists: opening it again is quick unless the lock is held
    holder = subprocess.Popen([sys.executable, "-c", f"""
import pathlib, time
from nnlab.tracking.store import store_lock
with store_lock({uri!r}):
    print("held", flush=True)
    time.sleep(2)
    pathlib.Path({str(released)!r}).write_text("the lock is released right after this")
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    open_store(uri, "exp")
    assert released.exists(), "open_store went on while another process held the store's lock"
    holder.wait(timeout=30)


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_new_and_untagged_experiments_are_tagged_as_model_training(store):
    client = MlflowClient(store)
    made = client.get_experiment(open_store(store, "fresh")[2])
    assert made.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("older")  # made before nnlab tagged its experiments
    other = client.create_experiment("agents", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert open_store(store, "older")[2] == old
    open_store(store, "agents")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # a kind chosen stays
