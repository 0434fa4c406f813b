"""Every command a class uses, against the session's real tracking server (`tracking_server`): jobs as students,
reports as the teacher, an outage met by the outbox, and no password in anything a run records."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fixtures.course_layouts import fashion_layout
from mlflow.tracking import MlflowClient

from nnlab.course.labs import script_path
from nnlab.tracking.accounts import experiment_by_name
from nnlab.server import service

pytestmark = pytest.mark.slow
JOB = ("trainer.verbose=0", "trainer.plot_model=false")


def client_as(server, monkeypatch, user: str) -> MlflowClient:
    server.sign_in(monkeypatch, user)
    return MlflowClient(server.url)


def runs_of(client: MlflowClient, experiment: str):
    found = experiment_by_name(client, experiment)  # polled while a job creates it: MLflow grants its owner after
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]) if found else []


def recorded_text(client: MlflowClient, run, tmp_path) -> str:
    """Everything the run records as text: params, tags, config.yaml."""
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    return json.dumps([run.data.params, run.data.tags]) + open(config).read()


@pytest.fixture(scope="module")
def alice_run(tracking_server, tmp_path_factory):
    """A student's job whose store URL carries her password (the run must record it without)."""
    cwd = tmp_path_factory.mktemp("alice")
    url = tracking_server.url.replace("http://", f"http://alice:{tracking_server.passwords['alice']}@")
    env = {"NNLAB_OUTBOX_DIR": str(cwd / "outbox")}
    done = subprocess.run([sys.executable, "-m", "nnlab", f"tracking.uri={url}", "trainer.epochs=2", *JOB],
                          cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert tracking_server.passwords["alice"] not in done.stdout + done.stderr
    return done, cwd


def test_a_students_job_logs_to_her_own_experiment_with_no_password_recorded(alice_run, tracking_server,
                                                                             monkeypatch, tmp_path):
    done, cwd = alice_run
    client = client_as(tracking_server, monkeypatch, "alice")
    (run, *_) = runs_of(client, "alice/nnlab")
    assert run.info.status == "FINISHED" and run.data.tags["nnlab.account"] == "alice"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert tracking_server.passwords["alice"] not in recorded_text(client, run, tmp_path)
    assert run.data.params["tracking.uri"] == tracking_server.url
    assert not list((cwd / "outbox").iterdir())  # everything arrived: no queue left behind
    assert "experiment 'alice/nnlab'" in done.stdout


def test_the_teacher_reports_every_students_runs_and_a_student_only_hers(alice_run, tracking_server, monkeypatch,
                                                                        tmp_path, nnlab_cli):
    from trained_runs import train_run

    tracking_server.sign_in(monkeypatch, "bob")
    train_run(tracking_server.url, "trainer.epochs=1", experiment="bob/nnlab")  # what bob/ names
    for user, accounts in (("teach", {"alice", "bob"}), ("alice", {"alice"})):
        tracking_server.sign_in(monkeypatch, user)
        code, out, err = nnlab_cli("report", "--experiment", "nnlab", "--out", str(tmp_path / user))
        assert code == 0, err
        table = (tmp_path / user / "table.csv").read_text()
        assert {a for a in ("alice", "bob") if f",{a}," in table} == accounts
        code, out, err = nnlab_cli("runs", "--stale")
        assert code == 0 and "no stale runs" in out, err


def test_predict_and_evaluate_read_a_students_run_from_the_server(alice_run, tracking_server, monkeypatch,
                                                                   tmp_path, nnlab_cli):
    from sklearn.datasets import load_digits

    client = client_as(tracking_server, monkeypatch, "alice")
    run_id = runs_of(client, "alice/nnlab")[-1].info.run_id
    np.save(tmp_path / "rows.npy", load_digits().images[:3, :, :, None].astype("float32") / 16)
    code, out, err = nnlab_cli("predict", run_id, str(tmp_path / "rows.npy"), "--out", str(tmp_path / "pred"))
    assert code == 0, err
    assert len((tmp_path / "pred" / "predictions.csv").read_text().splitlines()) == 4
    code, out, err = nnlab_cli("evaluate", run_id)
    assert code == 0, err
    assert any(r.data.tags.get("nnlab.role") == "evaluation" for r in runs_of(client, "alice/nnlab"))


def test_a_course_script_is_graded_into_the_students_experiment(tracking_server, monkeypatch, tmp_path, nnlab_cli):
    client = client_as(tracking_server, monkeypatch, "bob")
    data = fashion_layout(tmp_path, n_train=60, n_test=30)
    code, out, err = nnlab_cli("course", "run", str(script_path("exer_1")), str(data), "--epochs", "1")
    assert code == (0 if ": PASS: " in out else 1), err
    graded = [e for e in client.search_experiments() if e.name.startswith("bob/")]
    assert any(r.info.status == "FINISHED" for e in graded for r in client.search_runs([e.experiment_id]))


def test_a_sweep_runs_its_jobs_as_children_in_the_students_experiment(tracking_server, monkeypatch, tmp_path, cli):
    env = {**tracking_server.env("bob"), "NNLAB_OUTBOX_DIR": str(tmp_path / "outbox")}
    done = cli("-m", f"tracking.uri={tracking_server.url}", "trainer.epochs=1", "model.width=8,16",
               "tracking.experiment=sweep_lab", *JOB, "hydra.sweep.dir=" + str(tmp_path / "multirun"), cwd=tmp_path,
               env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(client_as(tracking_server, monkeypatch, "bob"), "bob/sweep_lab")
    jobs = [r for r in runs if r.data.tags.get("nnlab.role") != "sweep"]
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs)
    assert len(runs) == 3 and all(r.data.tags.get("mlflow.parentRunId") for r in jobs)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_while_the_server_is_down_ends_the_job_killed_and_runs_sync_sends_its_queue_once(
        tracking_server, monkeypatch, tmp_path, nnlab_cli):
    env = {**tracking_server.env("alice"), "NNLAB_OUTBOX_DIR": str(tmp_path / "outbox")}
    job = subprocess.Popen([sys.executable, "-m", "nnlab", "model=cnn", "trainer.epochs=400",
                            "tracking.experiment=outage", *JOB], cwd=tmp_path,
                           env={**os.environ, **env}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    client = client_as(tracking_server, monkeypatch, "alice")
    try:
        run = wait_for(lambda: next(iter(runs_of(client, "alice/outage")), None), 300, "the run")
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 2, 300, "two epochs")
        service.stop(tracking_server.folder)
        time.sleep(3)  # epochs go on, queued
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=120)  # a hang, not a speed, is what the timeout catches
    finally:
        job.kill()
        if service.running_state(service.ServerDir(tracking_server.folder)) is None:
            service.start(tracking_server.folder, port=int(tracking_server.url.rsplit(":", 1)[1]), workers=2)
    assert job.returncode == 130, out[-3000:]
    queued = tmp_path / "outbox" / run.info.run_id
    assert (queued / "outbox.jsonl").exists() and "nnlab runs --sync" in out
    monkeypatch.setenv("NNLAB_OUTBOX_DIR", str(tmp_path / "outbox"))
    code, out, err = nnlab_cli("runs", "--sync")
    assert code == 0 and "queued records of 1 runs reached" in out, err
    assert not queued.exists()
    finished = client.get_run(run.info.run_id)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert finished.info.status == "KILLED"
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3  # every epoch once, those of the outage too


def test_a_killed_job_resumes_against_the_server_to_finished_with_every_epoch_once(tracking_server, monkeypatch,
                                                                                    tmp_path, nnlab_cli):
    env = {**tracking_server.env("bob"), "NNLAB_OUTBOX_DIR": str(tmp_path / "outbox")}
    job = subprocess.Popen([sys.executable, "-m", "nnlab", "model=cnn", "trainer.epochs=6", "trainer.batch_size=8",
                            "tracking.experiment=resumed", *JOB], cwd=tmp_path, env={**os.environ, **env},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = client_as(tracking_server, monkeypatch, "bob")
    try:
        run = wait_for(lambda: next(iter(runs_of(client, "bob/resumed")), None), 300, "the run")
        wait_for(lambda: client.get_metric_history(run.info.run_id, "loss"), 300, "an epoch")
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 130, out[-2000:]
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    monkeypatch.setenv("NNLAB_OUTBOX_DIR", str(tmp_path / "outbox"))
    code, out, err = nnlab_cli("resume", run.info.run_id)
    assert code == 0, err
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert client.get_run(run.info.run_id).info.status == "FINISHED" and sorted(steps) == [1, 2, 3, 4, 5, 6]


def test_nnlab_detect_reads_a_students_detector_from_the_server(tracking_server, monkeypatch, tmp_path):
    pytest.importorskip("keras_hub")
    pytest.importorskip("pycocotools")
    from trained_runs import train_run

    from nnlab.use.detect import main

    tracking_server.sign_in(monkeypatch, "alice")
    monkeypatch.setenv("NNLAB_OUTBOX_DIR", str(tmp_path / "outbox"))
    tiny = ("dataset=scenes", "dataset.target=boxes", "dataset.count=24", "dataset.canvas_size=[64,64]",
            "dataset.items=[1,3]", "model=retinanet", "model.filters=[64,16,16,16]", "trainer.epochs=1",
            "trainer.batch_size=8")
    run_id = train_run(tracking_server.url, *tiny, experiment="alice/detect")
    main([run_id, "--scene", "3", "--size", "64", "64", "--out", str(tmp_path / "found"), "--top", "3",
          "--min-score", "0"])
    result = json.loads((tmp_path / "found" / "detections.json").read_text())
    assert len(result["detections"]) == 3 and result["size"] == [64, 64]
