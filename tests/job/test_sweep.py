"""Sweeps end to end: `nnlab sweep`, the MLflow parent/child runs, parallel jobs, failures, `nnlab report`."""

import json
import os

import pytest
from mlflow.tracking import MlflowClient

from nnlab.job.sweep import SWEEP_FILE
from nnlab.tracking.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG

pytestmark = pytest.mark.slow
TINY = ("trainer.epochs=1", "trainer.batch_size=32", "trainer.max_minutes=null", "trainer.plot_model=false",
        "trainer.save_model=false")


def digits_sweep(cli, tmp_path, store, experiment, *args):
    """A multirun of tiny digits jobs into `store`; returns (client, parents, jobs) after checking it succeeded."""
    result = cli("-m", *args, "dataset.limit=300", *TINY, f"tracking.uri={store}", f"tracking.experiment={experiment}",
                 f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, jobs = runs_by_role(store, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(j.data.tags[PARENT_TAG] == parents[0].info.run_id for j in jobs)
    return client, parents, jobs


def runs_by_role(store, experiment):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "sweep"]
    return client, parents, [r for r in runs if r.data.tags.get(ROLE_TAG) == "job"]


def test_depth_sweep_preset_nests_jobs_under_a_parent_and_reports(cli, tmp_path, idx_dir, store):
    result = cli("sweep", "fashion_depth", "model.depth=2,3", "model.param_budget=20000", f"dataset.path={idx_dir}",
                 "dataset.download=false", *TINY, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path}/sweep",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, jobs = runs_by_role(store, "fashion_depth")
    assert len(parents) == 1 and len(jobs) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("fashion_depth-")
    assert parent.data.tags["sweep.space"] == "model.depth=2,3"  # the command line replaced the preset's 2,3,5,10
    for job in jobs:
        assert job.info.status == "FINISHED"
        assert job.data.tags[PARENT_TAG] == parent.info.run_id
        assert job.data.tags[SWEEP_TAG] == parent.data.tags[SWEEP_TAG]
        assert abs(job.data.metrics["params"] - 20000) <= 1000  # the budget held at both depths
    assert sorted(j.info.run_name for j in jobs) == ["model.depth=2", "model.depth=3"]  # what tells them apart
    context = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())
    assert context["parent_run_id"] == parent.info.run_id
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/table.html", "report/metric_vs_params.png",
            "report/val_curves.png"} <= logged
    # The parent carries the best job: its test accuracy, its id and swept value, and a description saying so.
    top = max(j.data.metrics["test_accuracy"] for j in jobs)
    best = next(j for j in jobs if j.info.run_id == parent.data.params["best_run_id"])
    assert best.data.metrics["test_accuracy"] == top == parent.data.metrics["best_test_accuracy"]
    assert parent.data.params["best.model.depth"] == best.data.params["model.depth"]
    assert parent.data.params["best_run_name"] == best.info.run_name
    note = parent.data.tags["mlflow.note.content"]  # the solved width differs too: both are named
    assert note.startswith(f"best of 2: model.depth={best.data.params['model.depth']}, model.solved_width=")
    assert note.splitlines()[0].endswith(f", test accuracy {100 * top:.1f}%")
    assert f"FINISHED; {note.splitlines()[0]}; table: nnlab report --parent" in result.stdout  # said at the end

    out = tmp_path / "rep"
    report = cli("report", "--uri", store, "--sweep", parent.data.tags[SWEEP_TAG], "--out", str(out),
                 "--formats", "md,tex", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (out / "table.md").read_text()
    assert "model.depth" in table and "model.solved_width" in table and table.count("FINISHED") == 2
    assert (out / "table.tex").is_file() and not (out / "table.csv").exists()
    assert "fashion\\_depth-" in (out / "table.tex").read_text()  # the caption is escaped too
    missing = cli("report", "--sweep", "x", "--uri", f"sqlite:///{tmp_path}/nope.db", cwd=tmp_path)
    assert missing.returncode == 1 and "No MLflow store at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()


def test_a_failing_job_fails_the_sweep_and_leaves_nothing_running(cli, tmp_path, store):
    # A budget no width can meet: valid config, the job fails while building, inside its run.
    result = cli("-m", "model.param_budget=null,10", "dataset.limit=300", *TINY, f"tracking.uri={store}",
                 "tracking.experiment=bad", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert result.returncode != 0
    assert "param_budget=10 cannot be met" in result.stderr.splitlines()[-1]
    client, parents, jobs = runs_by_role(store, "bad")
    assert [p.info.status for p in parents] == ["FAILED"]
    assert sorted(j.info.status for j in jobs) == ["FAILED", "FINISHED"]
    assert parents[0].data.tags["error"] == "the sweep stopped early: 1 of 2 started jobs finished"
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/table.md" in logged  # the partial results are still reported


def test_parallel_jobs_on_a_brand_new_store_all_land(cli, tmp_path):
    """Four processes at once against a store that did not exist: created once, up front, none lost."""
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    client, _, jobs = digits_sweep(cli, tmp_path, store, "par", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                                   "model.width=16,24,32,48")
    assert len(jobs) == 4 and all(j.info.status == "FINISHED" for j in jobs)
    for job in jobs:
        assert [m.step for m in client.get_metric_history(job.info.run_id, "val_loss")] == [1]
        # each worker kept to its share of the cores without being told
        assert job.data.params["trainer.threads"] == str(max(1, (os.cpu_count() or 1) // 4))


def test_sweep_needs_a_preset_name(cli, tmp_path):
    result = cli("sweep", cwd=tmp_path)
    assert result.returncode == 2 and "nnlab sweep NAME" in result.stderr
    result = cli("sweep", "fashion_dept", cwd=tmp_path)
    assert result.returncode == 2 and "fashion_depth" in result.stderr  # the closest preset


def test_optuna_preset_runs_trials_as_child_runs(cli, tmp_path, idx_dir, store):
    result = cli("sweep", "fashion_optuna", "hydra.sweeper.n_trials=3", f"dataset.path={idx_dir}",
                 "dataset.download=false", *TINY, f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path}/sweep",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, jobs = runs_by_role(store, "fashion_optuna")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(jobs) == 3
    assert len({j.data.params["optimizer.learning_rate"] for j in jobs}) == 3  # sampled, not fixed
    assert all(1e-4 <= float(j.data.params["optimizer.learning_rate"]) <= 1e-2 for j in jobs)
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "best_value" in best


def test_submitit_jobs_in_their_own_processes_join_the_sweep(cli, tmp_path, store):
    """What a SLURM sweep does, on this machine: each job is a separate submitit process reading the sweep file."""
    _, _, jobs = digits_sweep(cli, tmp_path, store, "sub", "hydra/launcher=submitit_local",
                              "hydra.launcher.timeout_min=10", "model.width=16,24")
    assert sorted(j.info.run_name for j in jobs) == ["model.width=16", "model.width=24"]


def test_cluster_launcher_presets_compose(cli, tmp_path):
    result = cli("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", "-p", "hydra.launcher",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout
    assert "array_parallelism: 16" in result.stdout


def test_jobs_find_a_relative_sweep_folder_from_their_own_folder_and_stay_in_the_sweeps_experiment(cli, tmp_path,
                                                                                                  store):
    """hydra.job.chdir moves each job into its own folder; sweeping tracking.experiment cannot split the sweep."""
    result = cli("-m", "hydra.job.chdir=true", "hydra.sweep.dir=rel", "tracking.experiment=x,y", "dataset.limit=300",
                 *TINY, f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, jobs = runs_by_role(store, "nnlab")  # the sweep's experiment: the config's, before sweeping
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(j.data.tags["nnlab.requested_experiment"] for j in jobs) == ["x", "y"]
    assert (tmp_path / "rel" / SWEEP_FILE).is_file()


def test_sigterm_to_a_joblib_worker_ends_its_run_killed_and_leaves_nothing_running(tmp_path, store):
    """The signal handler is installed in each job's own process, so a worker killed by SIGTERM (a cluster's
    pre-emption, an impatient user) closes its run as KILLED, and the sweep closes the rest."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "nnlab", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.width=16,24",
         "trainer.epochs=2000", "trainer.max_minutes=1", "trainer.batch_size=32", "dataset.limit=300",
         "trainer.plot_model=false", "trainer.save_model=false", f"tracking.uri={store}", "tracking.experiment=term",
         f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr.txt").open("w"))  # a file, not a pipe nobody reads while it runs
    victim, deadline = None, time.time() + 420  # a loaded 2-core machine starts two TensorFlow workers slowly
    while victim is None and time.time() < deadline:
        time.sleep(1)
        try:
            _, _, jobs = runs_by_role(store, "term")
        except Exception:  # noqa: BLE001  (the store or experiment may not exist yet)
            continue
        running = [j for j in jobs if j.info.status == "RUNNING" and "nnlab.pid" in j.data.tags]
        victim = running[0] if running else None
    assert victim is not None, f"no job started: {(tmp_path / 'stderr.txt').read_text()[-3000:]}"
    worker = int(victim.data.tags["nnlab.pid"])
    assert worker != sweep.pid  # a joblib worker process, not the launcher
    os.kill(worker, signal.SIGTERM)
    sweep.wait(timeout=300)
    client, parents, jobs = runs_by_role(store, "term")
    assert client.get_run(victim.info.run_id).info.status == "KILLED"
    assert not [r for r in (*parents, *jobs) if r.info.status == "RUNNING"]
