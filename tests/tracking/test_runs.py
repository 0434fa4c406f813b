"""Runs left RUNNING by a dead process: found by `nnlab runs --stale`, closed by `--kill`; SIGTERM ends a run KILLED."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.job.sweep import MlflowSweepCallback, SweepContext
from nnlab.tracking import runs, track
from nnlab.tracking.track import (HEARTBEAT_TAG, HOST_TAG, KILLED_REASON_TAG, PARENT_TAG, PID_STARTED_TAG, PID_TAG,
                                  ROLE_TAG, SWEEP_TAG)

HOST = socket.gethostname()


@pytest.fixture
def exp(store):
    _, client, experiment_id = track.open_store(store, "unit")
    return client, experiment_id


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running(client, experiment_id, name, **tags):
    return client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()}).info.run_id


def on_this_host(pid, **more):
    return {HOST_TAG: HOST, PID_TAG: pid, HEARTBEAT_TAG: int(time.time()), **more}


def status(client, run_id):
    return client.get_run(run_id).info.status


def test_a_run_whose_process_is_gone_is_stale_and_kill_marks_it_killed_with_the_reason(exp, store, capsys):
    client, experiment_id = exp
    pid = dead_pid()
    run_id = running(client, experiment_id, "orphan", **on_this_host(pid))
    assert [r.info.run_id for r in runs.stale_runs(client)] == [run_id]

    runs.main(["--stale", "--uri", store])
    listed = capsys.readouterr().out
    assert run_id in listed and "orphan" in listed and str(pid) in listed and "is gone" in listed
    assert status(client, run_id) == "RUNNING"  # listing alone changes nothing

    runs.main(["--stale", "--kill", "--uri", store])
    assert status(client, run_id) == "KILLED"
    assert f"process {pid} is gone" in client.get_run(run_id).data.tags[KILLED_REASON_TAG]
    assert runs.stale_runs(client) == []


def test_a_run_whose_process_is_alive_is_not_stale(exp):
    client, experiment_id = exp
    running(client, experiment_id, "alive", **track.process_tags())
    assert runs.stale_runs(client) == []


def test_a_reused_pid_does_not_keep_a_dead_run_alive(exp):
    client, experiment_id = exp
    started = track.process_start_time(os.getpid())
    assert started is not None
    run_id = running(client, experiment_id, "reused", **on_this_host(os.getpid(), **{PID_STARTED_TAG: started - 600}))
    stale = runs.find_stale(client)
    assert [(r.info.run_id, "another program" in why) for r, why in stale] == [(run_id, True)]


def test_a_run_on_another_host_is_stale_only_after_the_silence_limit(exp):
    client, experiment_id = exp
    now = int(time.time())
    quiet = running(client, experiment_id, "quiet", **{HOST_TAG: "elsewhere", PID_TAG: 1, HEARTBEAT_TAG: now - 7200})
    running(client, experiment_id, "busy", **{HOST_TAG: "elsewhere", PID_TAG: 1, HEARTBEAT_TAG: now - 60})
    assert [r.info.run_id for r in runs.stale_runs(client, max_silence_s=3600)] == [quiet]
    assert runs.stale_runs(client, max_silence_s=3 * 3600) == []


def test_a_run_without_process_tags_is_left_alone(exp):
    client, experiment_id = exp
    running(client, experiment_id, "someone else's")
    assert runs.stale_runs(client) == []


def test_a_dead_sweep_parent_is_closed_after_its_jobs_and_not_while_a_job_runs(exp, store):
    client, experiment_id = exp
    gone = dead_pid()
    parent = running(client, experiment_id, "sweep-1", **{ROLE_TAG: "sweep", SWEEP_TAG: "sweep-1"},
                     **on_this_host(gone))
    done = running(client, experiment_id, "a", **{PARENT_TAG: parent, ROLE_TAG: "job"}, **on_this_host(gone))
    client.set_terminated(done, "FINISHED")
    lost = running(client, experiment_id, "b", **{PARENT_TAG: parent, ROLE_TAG: "job"}, **on_this_host(gone))
    alive = running(client, experiment_id, "c", **{PARENT_TAG: parent, ROLE_TAG: "job"}, **track.process_tags())
    assert [r.info.run_id for r in runs.stale_runs(client)] == [lost]  # job c still runs: the sweep is not over

    client.set_terminated(alive, "FINISHED")
    assert [r.info.run_id for r in runs.stale_runs(client)] == [lost, parent]  # jobs before their parent
    runs.main(["--stale", "--kill", "--uri", store, "--experiment", "unit"])
    assert [status(client, r) for r in (parent, done, lost, alive)] == ["KILLED", "FINISHED", "KILLED", "FINISHED"]
    assert client.get_run(parent).data.tags[KILLED_REASON_TAG].startswith(f"sweep: process {gone} is gone")


def test_a_sweep_stopped_early_kills_its_jobs_whose_process_is_gone_and_keeps_the_live_ones(exp, store):
    client, experiment_id = exp
    parent = running(client, experiment_id, "sweep-2", **{ROLE_TAG: "sweep", SWEEP_TAG: "sweep-2"},
                     **track.process_tags())
    lost = running(client, experiment_id, "a", **{PARENT_TAG: parent, ROLE_TAG: "job"}, **on_this_host(dead_pid()))
    alive = running(client, experiment_id, "b", **{PARENT_TAG: parent, ROLE_TAG: "job"}, **track.process_tags())
    callback = MlflowSweepCallback(report=False)
    callback.client = client
    callback.context = SweepContext("sweep-2", store, "unit", experiment_id, parent)
    callback.stopped_early()
    assert [status(client, r) for r in (parent, lost, alive)] == ["FAILED", "KILLED", "RUNNING"]


def test_runs_finds_the_store_like_report_and_rejects_bad_input(exp, store, tmp_path, monkeypatch, capsys):
    client, experiment_id = exp
    running(client, experiment_id, "orphan", **on_this_host(dead_pid()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    runs.main(["--stale"])
    assert "orphan" in capsys.readouterr().out
    with pytest.raises(NnlabError, match="--stale"):
        runs.main(["--kill"])
    with pytest.raises(NnlabError, match="did you mean 'unit'"):
        runs.main(["--stale", "--experiment", "unti"])
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(NnlabError, match=str(missing)):
        runs.main(["--stale", "--uri", f"sqlite:///{missing}"])
    assert not missing.parent.exists()
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(NnlabError, match="No MLflow store at"):
        runs.main(["--stale"])


def test_install_signal_handlers_is_idempotent_and_skips_other_threads():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    try:
        assert track.install_signal_handlers() and track.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is track.raise_terminated
        results = []
        worker = threading.Thread(target=lambda: results.append(track.install_signal_handlers()))
        worker.start()
        worker.join()
        assert results == [False]
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGHUP, before[1])


SLEEPER = """
import sys, time
from nnlab.tracking import track
from nnlab.config import TrackingConfig

track.install_signal_handlers()
with track.start_run(TrackingConfig(uri=sys.argv[1], experiment="sig"), {}) as run:
    print(run.run_id, flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_sigterm_ends_a_sleeping_run_killed(store):
    job = subprocess.Popen([sys.executable, "-c", SLEEPER, store], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    run_id = job.stdout.readline().strip()
    assert run_id, job.communicate()[1][-2000:]
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode != 0 and "stopped by SIGTERM" in err
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "Terminated: stopped by SIGTERM"
    assert run.data.tags[PID_TAG] == str(job.pid) and run.data.tags[HOST_TAG] == HOST
