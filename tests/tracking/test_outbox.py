"""The outbox against a real `mlflow server` (issue 26, item 4): training never waits on the tracking server, and
nothing queued is lost or sent twice. An unreachable server is either the real one stopped (and restarted on its
port) or a port nobody listens on."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from nnlab.tracking.outbox import HTTP_ENV, Outbox, sync

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on a fixed port, artifacts proxied over HTTP like a remote server's."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'db.sqlite'}",
               "--artifacts-destination", str(self.root / "art"), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
            time.sleep(0.3)
        raise TimeoutError((self.root / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: uvicorn's worker goes too
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(server) -> MlflowClient:
    if not server.up():  # a failed test may have left it stopped
        server.start()
    return MlflowClient(tracking_uri=server.uri)


@pytest.fixture(autouse=True)
def http_env(monkeypatch):
    """Outbox.start sets these for the process; undone after each test."""
    for name in HTTP_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run_id(client) -> str:
    experiment = client.get_experiment_by_name("outbox") or client.get_experiment(client.create_experiment("outbox"))
    return client.create_run(experiment.experiment_id).info.run_id


@pytest.fixture
def dead_client() -> MlflowClient:
    return MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")


def epoch(step: int, key: str = "loss") -> list[Metric]:
    return [Metric(key, 1.0 / (step + 1), 1_700_000_000_000 + step, step)]


def steps(client: MlflowClient, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_records_queued_while_up_arrive_in_order_once_and_the_run_finishes(client, run_id, tmp_path):
    outbox = Outbox(tmp_path / "outbox", client, run_id).start()
    outbox.batch(params=[Param("lr", "0.1")], tags=[RunTag("phase", "train")])
    for step in range(5):
        outbox.batch(metrics=epoch(step) + epoch(step, "acc"))
    weights = tmp_path / "weights.txt"
    weights.write_text("w")
    outbox.artifact(weights, "model")
    weights.unlink()  # the outbox has its copy
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.txt").write_text("plot")
    outbox.artifact(tmp_path / "plots", "plots")
    outbox.text("hello", "notes/readme.txt")
    outbox.batch(tags=[RunTag("phase", "done")])  # sent after "train": the later value wins
    outbox.terminate("FINISHED")
    assert outbox.close(30) == 0

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"} and run.data.tags["phase"] == "done"
    assert steps(client, run_id) == steps(client, run_id, "acc") == [0, 1, 2, 3, 4]
    artifacts = {a.path for folder in ("model", "plots", "notes") for a in client.list_artifacts(run_id, folder)}
    assert artifacts == {"model/weights.txt", "plots/loss.txt", "notes/readme.txt"}
    assert not list((tmp_path / "outbox" / "files").iterdir())  # copies go once sent


def test_batches_while_server_down_are_queued_on_disk_and_all_arrive_after_restart(server, client, run_id, tmp_path):
    outbox = Outbox(tmp_path / "outbox", client, run_id).start()
    server.stop()
    for step in range(30):
        outbox.batch(metrics=epoch(step))  # returns with the record on disk, unsent: nothing waits on the server
    assert outbox.pending() == 30
    assert len((tmp_path / "outbox" / "outbox.jsonl").read_text().splitlines()) == 30
    server.start()
    assert outbox.flush(60) == 0
    assert steps(client, run_id) == list(range(30))
    outbox.close(5)


SCRIPT = """
import sys
from pathlib import Path
from mlflow import MlflowClient
from mlflow.entities import Metric
from nnlab.tracking.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]), MlflowClient(tracking_uri=sys.argv[2]), sys.argv[3]).start()
for step in range(10):
    outbox.batch(metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step)])
outbox.terminate("FINISHED")
print(outbox.close(0.5))
"""


class CountingClient(MlflowClient):
    """The real client, counting what it sends."""

    calls = 0

    def log_batch(self, *args, **kwargs):
        self.calls += 1
        return super().log_batch(*args, **kwargs)


def test_records_left_by_an_ended_process_are_sent_by_sync_exactly_once(server, client, run_id, dead_client,
                                                                         tmp_path):
    folder = tmp_path / "outbox"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), dead_client.tracking_uri, run_id],
                          check=False, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == 11  # nothing reached the unreachable server; the process ended anyway

    counting = CountingClient(tracking_uri=server.uri)
    assert sync(folder, counting, run_id, 60) == 0
    assert steps(client, run_id) == list(range(10)) and client.get_run(run_id).info.status == "FINISHED"
    assert counting.calls == 1  # ten queued epochs merged into one log_batch
    assert sync(folder, counting, run_id, 10) == 0 and counting.calls == 1


def test_refused_param_goes_to_rejected_file_and_later_records_arrive(client, run_id, tmp_path, caplog):
    outbox = Outbox(tmp_path / "outbox", client, run_id).start()
    with caplog.at_level(logging.WARNING, logger="nnlab.tracking.outbox"):
        outbox.batch(params=[Param("lr", "0.1")], metrics=epoch(0))
        outbox.batch(params=[Param("lr", "0.2")])  # MLflow refuses a param's second value
        outbox.batch(metrics=epoch(1), tags=[RunTag("after", "yes")])
        outbox.terminate("FINISHED")
        assert outbox.close(30) == 0
    rejected = [json.loads(line) for line in (tmp_path / "outbox" / "outbox.rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and '"0.2"' in rejected[0]["record"] and "lr" in rejected[0]["error"]
    assert len([r for r in caplog.records if "not accepted" in r.getMessage()]) == 1
    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.1"} and run.data.tags["after"] == "yes" and run.info.status == "FINISHED"
    assert steps(client, run_id) == [0, 1]


def test_large_backlog_is_split_within_mlflow_batch_limits(client, run_id, tmp_path):
    outbox = Outbox(tmp_path / "outbox", client, run_id)
    outbox.batch(params=[Param(f"p{i}", str(i)) for i in range(250)], tags=[RunTag(f"t{i}", "x") for i in range(150)])
    for step in range(300):  # 1,200 metrics queued before the sender starts: more than one call may carry
        outbox.batch(metrics=[Metric(k, step, 1_700_000_000_000 + step, step) for k in ("a", "b", "c", "d")])
    assert outbox.start().close(60) == 0
    assert not (tmp_path / "outbox" / "outbox.rejected.jsonl").exists()
    run = client.get_run(run_id)
    assert len(run.data.params) == 250 and len([t for t in run.data.tags if t.startswith("t")]) == 150
    assert all(steps(client, run_id, k) == list(range(300)) for k in "abcd")


def test_close_while_server_down_returns_the_undelivered_count_and_keeps_them_on_disk(dead_client, tmp_path):
    outbox = Outbox(tmp_path / "outbox", dead_client, "0" * 32).start()
    for step in range(3):
        outbox.batch(metrics=epoch(step))
    assert outbox.close(2) == 3
    assert len((tmp_path / "outbox" / "outbox.jsonl").read_text().splitlines()) == 3
    assert Outbox(tmp_path / "outbox", dead_client, "0" * 32).pending() == 3  # a later process finds them
