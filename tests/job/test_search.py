"""Searches with nnlab's Optuna sweeper (src/hydra_plugins/nnlab_optuna_sweeper) on the current Optuna: the
`params` syntax, pruning, studies in a storage that a rerun continues and processes share, killed trials."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from job.test_sweep import runs_by_role
from optuna.trial import TrialState

from hydra_plugins.nnlab_optuna_sweeper.optuna_sweeper import search_space

pytestmark = pytest.mark.slow
SEARCH = ("hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_jobs=1",
          "optimizer.learning_rate=tag(log,interval(1e-3,1e-1))", "model.width=choice(16,32)", "dataset.limit=300",
          "trainer.batch_size=32", "trainer.max_minutes=null", "trainer.plot_model=false", "trainer.save_model=false",
          "trainer.verbose=0")


def study_of(storage: str, name: str = "s"):
    return optuna.load_study(study_name=name, storage=storage)


def command(tmp_path, store, storage, *args, sweep="sweep"):
    return [sys.executable, "-m", "nnlab", "-m", *SEARCH, f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=s", f"tracking.uri={store}", "tracking.experiment=search",
            f"hydra.sweep.dir={tmp_path}/{sweep}", *args]


def env():
    return {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")} | {
        "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_the_sweepers_syntax_maps_to_optunas_distributions():
    space, fixed = search_space(["a=interval(0.1,0.5)", "b=tag(log,interval(1e-4,1e-1))", "c=int(interval(2,9))",
                                 "d=choice(x,y)", "e=range(1,10,2)", "f=7", "+g=choice([1,2],[3])"])
    assert space["a"] == optuna.distributions.FloatDistribution(0.1, 0.5)
    assert space["b"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert space["c"] == optuna.distributions.IntDistribution(2, 9)
    assert space["d"].choices == ("x", "y") and space["+g"].choices == ("[1,2]", "[3]")
    assert space["e"] == optuna.distributions.IntDistribution(1, 9, step=2)
    assert fixed == {"f": "7"}


def test_a_pruned_trial_stops_after_its_epoch_and_its_run_says_so(cli, tmp_path, store):
    storage = f"sqlite:///{tmp_path}/study.db"
    result = cli("-m", *SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
                 "hydra.sweeper.study_name=s", "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.1}",
                 "trainer.epochs=3", f"tracking.uri={store}", "tracking.experiment=search",
                 f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state for t in study_of(storage).trials] == [TrialState.PRUNED] * 2  # no accuracy reaches 1.1
    _, parents, jobs = runs_by_role(store, "search")
    assert [p.info.status for p in parents] == ["FINISHED"]
    for job in jobs:
        assert job.info.status == "FINISHED" and job.data.tags["optuna.state"] == "PRUNED"
        assert job.data.metrics["epochs_run"] == 1 and job.data.tags["pruned"].startswith("after epoch 1: val_acc")
        assert job.data.tags["stopped_by"] == "pruned" and "test_accuracy" in job.data.metrics  # still evaluated


def test_a_killed_search_continues_to_n_trials_in_total_under_its_parent(tmp_path, store):
    """SIGKILL mid-trial: the rerun marks the trial FAIL and its run KILLED, then runs the rest, no number twice."""
    storage = f"sqlite:///{tmp_path}/study.db"
    first = subprocess.Popen(command(tmp_path, store, storage, "hydra.sweeper.n_trials=3", "trainer.epochs=30",
                                     "dataset.limit=null"), cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # until the second trial trains
        time.sleep(0.5)
        try:
            running = study_of(storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001, S112  (the study may not exist yet)
            continue
        if running and running[0].number == 1:
            break
    time.sleep(3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = subprocess.run(command(tmp_path, store, storage, "hydra.sweeper.n_trials=3", "trainer.epochs=1"),
                           cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_of(storage).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    client, parents, jobs = runs_by_role(store, "search")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the study's one parent, reopened
    assert parents[0].data.tags["failed_trials"] == "1"
    states = {j.data.tags["optuna.trial"]: (j.info.status, j.data.tags["optuna.state"]) for j in jobs}
    assert states == {"0": ("FINISHED", "COMPLETE"), "1": ("KILLED", "FAIL"), "2": ("FINISHED", "COMPLETE"),
                      "3": ("FINISHED", "COMPLETE")}
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id, "optuna")} >= {
        "optuna/optimization_history.png", "optuna/param_importances.png"}


def test_two_processes_running_the_same_command_share_the_study(tmp_path, store):
    storage = f"sqlite:///{tmp_path}/study.db"
    both = [subprocess.Popen(command(tmp_path, store, storage, "hydra.sweeper.n_trials=4", "trainer.epochs=1",
                                     sweep=f"sweep{i}"), cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in both]
    assert [p.returncode for p in both] == [0, 0], [e[-2000:] for e in errors]
    trials = [t for t in study_of(storage).trials if not t.user_attrs.get("nnlab.surplus")]
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # Optuna numbers them: none twice
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    _, parents, jobs = runs_by_role(store, "search")
    assert sorted(j.data.tags["optuna.trial"] for j in jobs) == [str(t.number) for t in trials]
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} <= {p.info.run_id for p in parents}


def test_a_search_whose_every_trial_failed_ends_failed_and_exits_non_zero(cli, tmp_path, store):
    """max_failure_rate 1: the launcher returns normally, so the parent's status is what tells the shell."""
    result = cli("-m", *SEARCH, "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=1.0",
                 "model.param_budget=10", "trainer.epochs=1", f"tracking.uri={store}", "tracking.experiment=search",
                 f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("nnlab: error: sweep ") and "ended FAILED" in result.stderr
    _, parents, jobs = runs_by_role(store, "search")
    assert [p.info.status for p in parents] == ["FAILED"] and [j.info.status for j in jobs] == ["FAILED"] * 2


def test_every_pruner_name_builds_its_optuna_pruner_and_an_unknown_one_lists_the_names():
    from nnlab.errors import NnlabError
    from nnlab.job.search import PRUNERS, make_pruner

    built = {name: type(make_pruner(name)).__name__ for name in [*PRUNERS, "none"]}
    assert built == {name: cls for name, (cls, _) in PRUNERS.items()} | {"none": "NopPruner"}
    assert make_pruner("percentile")._percentile == 25.0  # the top quarter kept
    assert type(make_pruner({"_target_": "optuna.pruners.PercentilePruner", "percentile": 40.0})).__name__ == \
        "PercentilePruner"
    with pytest.raises(NnlabError, match="median"):
        make_pruner("medain")
