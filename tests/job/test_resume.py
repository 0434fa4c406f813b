"""Never lose a run: divergence fails cleanly, every epoch leaves a checkpoint, and an interrupted run resumes
in the same MLflow run with its epochs, stages and metric steps continuing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from nnlab.job import app
from nnlab.job.resume import resume
from nnlab.training import callbacks
from nnlab.training.callbacks import load_checkpoint

BASE = ("trainer.verbose=0", "trainer.plot_model=false", "model.width=32", "trainer.batch_size=64")


def composed(store, *overrides):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[f"tracking.uri={store}", "tracking.experiment=resume",
                                                        *BASE, *overrides])


def only_run(store):
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    return client, run


def steps(client, run_id, key="loss"):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def interrupt_after(monkeypatch, epoch: int):
    """Ctrl-C in the epoch logger after `epoch` epochs: that epoch's checkpoint exists, its metrics were not
    logged (the worst moment to die)."""
    original = callbacks.EpochMetrics.on_epoch_end

    def on_epoch_end(self, e, logs=None):
        if e + 1 == epoch:
            raise KeyboardInterrupt
        original(self, e, logs)

    monkeypatch.setattr(callbacks.EpochMetrics, "on_epoch_end", on_epoch_end)


def test_a_diverging_run_fails_naming_epoch_and_batch_and_saves_no_model(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=r"diverged: the loss became (nan|inf) at epoch 1, batch \d+"):
        app.run(composed(store, "optimizer=sgd", "optimizer.learning_rate=1e6", "trainer.epochs=3"))
    client, run = only_run(store)
    assert run.info.status == "FAILED" and "learning_rate" in run.data.tags["error"]
    assert "model" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert len(steps(client, run.info.run_id)) <= 1  # stopped within the first epoch


def test_a_finished_run_removes_its_checkpoint_unless_kept(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app.run(composed(store, "trainer.epochs=2", "trainer.keep_checkpoint=true"))
    _, run = only_run(store)
    state, weights = load_checkpoint(run.data.tags["nnlab.checkpoint"])
    assert state["epoch"] == 2 and weights.is_file() and len(state["result"]["history"]["loss"]) == 2
    app.run(composed(store, "trainer.epochs=1", "tracking.run_name=second"))
    client = MlflowClient(store)
    second = next(r for r in client.search_runs([run.info.experiment_id]) if r.info.run_name == "second")
    assert not Path(second.data.tags["nnlab.checkpoint"]).exists()


def test_an_interrupted_run_resumes_in_the_same_run_with_every_epoch_once(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        app.run(composed(store, "trainer.epochs=5"))
    client, run = only_run(store)
    assert run.info.status == "KILLED" and steps(client, run.info.run_id) == [1, 2]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resume(run.info.run_id, store)
    client, again = only_run(store)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert steps(client, run.info.run_id) == [1, 2, 3, 4, 5]  # epoch 3 came from the checkpoint's history
    assert steps(client, run.info.run_id, "val_accuracy") == [1, 2, 3, 4, 5]
    assert again.data.metrics["epochs_run"] == 5 and again.data.tags["nnlab.resumed_from_epoch"] == "3"
    assert again.data.metrics["test_accuracy"] > 0.8
    names = sorted(i.dataset.name for i in again.inputs.dataset_inputs)
    assert names == ["digits-test", "digits-train", "digits-val"]  # each logged once, not again by the resume


def test_a_run_killed_after_its_last_epoch_resumes_to_evaluate_the_checkpoints_weights(store, tmp_path, monkeypatch):
    """Nothing left to train (a requeued SLURM job killed while evaluating): the checkpoint's model is compiled,
    restored and evaluated, not a fresh one."""
    _, run = killed_run(store, tmp_path, monkeypatch, epochs=3, after=3)
    resume(run.info.run_id, store)
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and again.data.tags["nnlab.resumed_from_epoch"] == "3"
    assert steps(client, run.info.run_id) == [1, 2, 3]
    assert again.data.metrics["test_accuracy"] > 0.5  # the trained weights (0.70 here), not an untrained ~0.1


def test_resume_continues_stages_where_they_were(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stages = ("trainer.stages=[{epochs:2,trainable:none,learning_rate:0.01},"
              "{epochs:3,trainable:all,learning_rate:0.001}]")
    interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        app.run(composed(store, stages))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    _, run = only_run(store)
    resume(run.info.run_id, store)
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and again.data.tags["stage_starts"] == "3"
    lrs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    assert lrs[2] == pytest.approx(0.01) and lrs[5] == pytest.approx(0.001)  # stage 2's rate after the resume


def test_resume_refuses_finished_runs_and_runs_without_a_checkpoint(store, tmp_path, monkeypatch):
    from nnlab.errors import NnlabError

    monkeypatch.chdir(tmp_path)
    app.run(composed(store, "trainer.epochs=1"))
    _, run = only_run(store)
    with pytest.raises(NnlabError, match="already FINISHED"):
        resume(run.info.run_id, store)
    with pytest.raises(NnlabError, match="No run 'nope'"):
        resume("nope", store)


def test_the_same_seed_gives_identical_metrics_on_cpu(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        app.run(composed(store, "trainer.epochs=2", f"tracking.run_name={name}"))
    client = MlflowClient(store)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("resume").experiment_id])}
    history = {n: [m.value for m in client.get_metric_history(r.info.run_id, "val_loss")] for n, r in runs.items()}
    assert history["a"] == history["b"]
    assert runs["a"].data.metrics["test_accuracy"] == runs["b"].data.metrics["test_accuracy"]


@pytest.mark.slow
def test_kill_9_mid_run_then_nnlab_resume_finishes_the_planned_epochs(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [sys.executable, "-m", "nnlab", f"tracking.uri={store}", "tracking.experiment=resume", *BASE,
            "trainer.epochs=40", "model.width=256", "model.depth=3"]
    job = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = list(tmp_path.glob("outputs/**/checkpoint/latest"))
        if found and load_checkpoint(found[0].parent)[0]["epoch"] >= 3:
            break
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    client, run = only_run(store)
    assert run.info.status == "RUNNING"  # what kill -9 leaves behind
    done = subprocess.run([sys.executable, "-m", "nnlab", "resume", run.info.run_id, "--uri", store], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and again.data.metrics["epochs_run"] == 40
    assert steps(client, run.info.run_id) == list(range(1, 41))


def test_resume_refuses_a_plugin_named_only_in_the_stored_config_until_the_user_passes_it(store, tmp_path,
                                                                                           monkeypatch):
    from nnlab.errors import NnlabError
    from nnlab.job.resume import main

    plugin = tmp_path / "resume_plugin.py"
    marker = tmp_path / "resume_plugin.imported"
    plugin.write_text(f"with open({str(marker)!r}, 'a') as f:\n    f.write('imported\\n')\n")
    monkeypatch.chdir(tmp_path)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        app.run(composed(store, "trainer.epochs=3", f"plugins=['{plugin}']"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    client, run = only_run(store)
    run_id = run.info.run_id
    sys.modules.pop("nnlab_plugin_resume_plugin")  # as in a new process: the training's import is gone
    marker.unlink()
    before = snapshot(client, run_id)
    with pytest.raises(NnlabError, match=f"lists plugin {plugin}, .* pass --plugins {plugin} .* or --trust-plugins"):
        main([run_id, "--uri", store])
    assert not marker.exists() and snapshot(client, run_id) == before  # nothing imported, the run untouched
    main([run_id, "--uri", store, "--plugins", str(plugin)])
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and steps(client, run_id) == [1, 2, 3]
    assert marker.read_text() == "imported\n"
    sys.modules.pop("nnlab_plugin_resume_plugin")


def test_the_config_form_resumes_a_run_too(store, tmp_path, monkeypatch):
    _, run = killed_run(store, tmp_path, monkeypatch, epochs=3, after=2)
    app.run(composed(store, f"tracking.resume={run.info.run_id}"))
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and steps(client, run.info.run_id) == [1, 2, 3]


# ---------------------------------------------------------------- one owner per run

HOLDER = """
import sys, time
from nnlab.training.checkpoints import claim
with claim(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def killed_run(store, tmp_path, monkeypatch, epochs=4, after=2):
    """A run interrupted after `after` of `epochs` epochs (its checkpoint holds that epoch, unlogged)."""
    monkeypatch.chdir(tmp_path)
    interrupt_after(monkeypatch, after)
    with pytest.raises(KeyboardInterrupt):
        app.run(composed(store, f"trainer.epochs={epochs}"))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    return only_run(store)


def snapshot(client, run_id):
    run = client.get_run(run_id)
    return run.info.status, run.data.tags, steps(client, run_id)


def test_resume_refuses_while_the_runs_owner_lives_without_touching_it_and_takes_over_once_it_is_killed(
        store, tmp_path, monkeypatch):
    import socket

    from nnlab.training.checkpoints import RunOwnedError

    client, run = killed_run(store, tmp_path, monkeypatch)
    run_id, folder = run.info.run_id, run.data.tags["nnlab.checkpoint"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, folder, run_id], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(client, run_id)
        with pytest.raises(RunOwnedError) as caught:
            resume(run_id, store)
        message = str(caught.value)
        assert f"Run {run_id} is being trained by process {holder.pid} on {socket.gethostname()}" in message
        assert "\n" not in message and f"kill {holder.pid}" in message
        assert snapshot(client, run_id) == before  # not reopened, not marked FAILED, nothing logged
    finally:
        holder.kill()
        holder.wait()
    resume(run_id, store)  # its owner is dead: taken over
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and steps(client, run_id) == [1, 2, 3, 4]
    assert "error" not in again.data.tags


def test_resume_refuses_a_running_run_whose_process_lives(store, tmp_path, monkeypatch):
    import socket

    from nnlab.errors import NnlabError
    from nnlab.tracking.track import process_start_time

    client, run = killed_run(store, tmp_path, monkeypatch, epochs=3, after=2)
    alive = subprocess.Popen(["sleep", "600"])
    try:
        # What an nnlab without owner locks leaves while it trains: RUNNING, with its host and live pid.
        client.update_run(run.info.run_id, status="RUNNING")
        for key, value in {"nnlab.host": socket.gethostname(), "nnlab.pid": str(alive.pid),
                           "nnlab.pid_started": str(int(process_start_time(alive.pid)))}.items():
            client.set_tag(run.info.run_id, key, value)
        before = snapshot(client, run.info.run_id)
        with pytest.raises(NnlabError, match=f"is being trained by process {alive.pid} on {socket.gethostname()}"):
            resume(run.info.run_id, store)
        assert snapshot(client, run.info.run_id) == before
    finally:
        alive.kill()
        alive.wait()


def test_a_damaged_newest_checkpoint_is_resumed_from_the_one_before_and_says_so(store, tmp_path, monkeypatch):
    client, run = killed_run(store, tmp_path, monkeypatch, epochs=4, after=3)
    folder = Path(run.data.tags["nnlab.checkpoint"])
    assert sorted(p.name for p in folder.glob("epoch-*")) == ["epoch-00002", "epoch-00003"]
    damaged = folder / "epoch-00003" / "weights.weights.h5"
    os.truncate(damaged, 1000)
    resume(run.info.run_id, store)
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and again.data.tags["nnlab.resumed_from_epoch"] == "2"
    assert str(damaged) in again.data.tags["nnlab.checkpoint_fallback"]
    assert steps(client, run.info.run_id) == [1, 2, 3, 4]  # epoch 3 was never logged: trained again, once


def test_epochs_logged_after_the_checkpoint_fallen_back_to_are_trained_and_logged_again_and_the_tag_says_so(
        store, tmp_path, monkeypatch):
    client, run = killed_run(store, tmp_path, monkeypatch, epochs=4, after=3)
    client.log_metric(run.info.run_id, "loss", 0.5, step=3)  # as if it died after logging epoch 3
    folder = Path(run.data.tags["nnlab.checkpoint"])
    (folder / "epoch-00003" / "state.json").write_text("{")
    resume(run.info.run_id, store)
    client, again = only_run(store)
    assert again.data.tags["nnlab.resumed_from_epoch"] == "2"
    assert again.data.tags["nnlab.checkpoint_fallback"].endswith("; epochs 3-3 were logged already and are logged "
                                                                 "again")
    assert steps(client, run.info.run_id) == [1, 2, 3, 3, 4]


def killed_9(tmp_path, store, epochs: int, at_epoch: int = 2):
    """A job killed with SIGKILL once its checkpoint holds `at_epoch`: its run is left RUNNING, its process gone."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [sys.executable, "-m", "nnlab", f"tracking.uri={store}", "tracking.experiment=resume", *BASE,
            f"trainer.epochs={epochs}", "model.width=256", "model.depth=3"]
    job = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = list(tmp_path.glob("outputs/**/checkpoint/latest"))
        if found and load_checkpoint(found[0].parent)[0]["epoch"] >= at_epoch:
            break
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    return env


@pytest.mark.slow
def test_two_resumes_started_together_train_the_run_once(tmp_path):
    import socket

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = killed_9(tmp_path, store, epochs=30)
    client, run = only_run(store)
    run_id = run.info.run_id
    both = [subprocess.Popen([sys.executable, "-m", "nnlab", "resume", run_id, "--uri", store], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in both]
    assert sorted(p.returncode for p in both) == [0, 1], [o[1][-2000:] for o in outs]
    winner, loser = (0, 1) if both[0].returncode == 0 else (1, 0)
    lines = [line for line in outs[loser][1].splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"nnlab: error: Run {run_id} is being trained by process {both[winner].pid} on "
                               f"{socket.gethostname()}"), lines
    client, again = only_run(store)
    assert again.info.status == "FINISHED" and "error" not in again.data.tags
    assert steps(client, run_id) == list(range(1, 31))  # every epoch logged once
