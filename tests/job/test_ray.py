"""Sweeps on a running Ray cluster (`hydra/launcher=ray`, nnlab's launcher in src/hydra_plugins): the jobs are Ray
tasks on a private head this module starts, as `make ray` starts one, and stops again."""

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from job.test_sweep import TINY, runs_by_role

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(session: int, temp_dir: str) -> dict[int, str]:
    """The head's processes still alive: its session's (raylet, GCS, agents, workers: each worker has its own
    process group, not its own session), and any naming its folder."""
    found = {}
    for args in (["pgrep", "-a", "-s", str(session)], ["pgrep", "-a", "-f", temp_dir]):
        for line in subprocess.run(args, capture_output=True, text=True, check=False).stdout.splitlines():
            pid, _, command = line.partition(" ")
            found[int(pid)] = command
    found.pop(os.getpid(), None)
    return found


def stop_head(session: int, temp_dir: str) -> dict[int, str]:
    """`ray stop` would stop every Ray process on the machine (a user's `make ray` head too): end only this
    head's session, SIGTERM first, then SIGKILL for what ignores it (Ray's GCS server does). Returns what is
    still alive after that."""
    for sig, wait_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        for pid in leftovers(session, temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait_s
        while leftovers(session, temp_dir) and time.time() < deadline:
            time.sleep(0.5)
    return leftovers(session, temp_dir)


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster of 2 CPUs on its own ports; its address. Fails (never skips) if it cannot start."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.fail(f"no {ray}: install the ray extra (pip install -e '.[ray]', or make ray)")
    temp_dir = tempfile.mkdtemp(prefix="nnray", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    port = free_port()
    ports = [f"--{name}={free_port()}" for name in ("ray-client-server-port", "dashboard-port",
                                                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "metrics-export-port")]
    head = subprocess.Popen([str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000",
                             f"--temp-dir={temp_dir}", "--disable-usage-stats", "--include-dashboard=false", *ports],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = head.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        head.kill()
        out = f"(no answer in 120 s) {head.communicate()[0]}"
    if head.returncode != 0:
        stop_head(head.pid, temp_dir)
        pytest.fail(f"the Ray head did not start (exit {head.returncode}): {out[-3000:]}")
    yield f"127.0.0.1:{port}"
    left = stop_head(head.pid, temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"Ray processes outlived the head: {left}"


def test_a_sweep_joins_a_running_cluster_and_each_job_is_a_child_run_tagged_with_its_task(cli, tmp_path, store,
                                                                                          ray_head):
    result = cli("-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_head}", "model.width=16,24",
                 "dataset.limit=300", *TINY, f"tracking.uri={store}", "tracking.experiment=ray",
                 "hydra.sweep.dir=sweep", cwd=tmp_path)  # relative: the jobs resolve it from the launch folder
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, jobs = runs_by_role(store, "ray")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(j.info.status for j in jobs) == ["FINISHED", "FINISHED"]
    assert sorted(j.info.run_name for j in jobs) == ["model.width=16", "model.width=24"]
    assert all(ipaddress.ip_address(j.data.tags["ray_node_ip"]) for j in jobs)  # the machine's, as Ray sees it
    assert len({j.data.tags["ray_task_id"] for j in jobs}) == 2
    assert {j.data.params["trainer.threads"] for j in jobs} == {"1"}  # the one CPU Ray gave each job
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]


def test_without_a_cluster_at_the_address_the_sweep_fails_in_one_sentence(cli, tmp_path, store):
    nowhere = f"127.0.0.1:{free_port()}"
    result = cli("-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={nowhere}", "model.width=16,24",
                 *TINY, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"nnlab: error: no Ray cluster to join at address '{nowhere}': nothing listens there; start one with "
        "`make ray` (ray start --head), or point hydra.launcher.ray.init.address at a running head (HOST:6379)")


def test_the_workers_get_the_shells_tracking_settings_but_never_its_password(monkeypatch):
    """A task's runtime_env is visible to whoever can list the cluster's tasks."""
    from hydra_plugins.nnlab_ray_launcher.ray_launcher import with_env

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "token")
    env = with_env({"env_vars": {"KERAS_BACKEND": "jax"}})["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://server:5000" and env["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert env["KERAS_BACKEND"] == "jax"
    assert "MLFLOW_TRACKING_PASSWORD" not in env and "MLFLOW_TRACKING_TOKEN" not in env
