"""`python -m nnlab` as a user runs it, on generated IDX files, into a private MLflow store."""

import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from data_fixtures import corrupt, make_split_tree
from mlflow.tracking import MlflowClient

from nnlab.data.idx import FASHION_CLASSES
from nnlab.metrics import metric_safe

pytestmark = pytest.mark.slow
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
ARTIFACTS = {"config.yaml", "model_summary.txt", "curves.png", "confusion_matrix.png", "classification_report.txt",
             "classification_report.json", "model", "preprocessing.json"}


def runs_of(store, experiment):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    return client, client.search_runs([exp.experiment_id])


def test_fashion_cnn_job_logs_a_complete_run(cli, tmp_path, idx_dir, store):
    result = cli(
        "dataset=fashion_mnist", f"dataset.path={idx_dir}", "dataset.download=false", "model=cnn",
        "model.blocks=[{filters:4},{filters:8}]", "model.dense=[16]", "model.batch_norm=true",
        "optimizer.learning_rate=0.01", "optimizer.schedule.name=cosine", "trainer.epochs=3",
        "trainer.batch_size=32", "trainer.early_stopping.patience=5", f"tracking.uri={store}",
        "tracking.experiment=e2e", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FINISHED" in result.stdout and "make ui" in result.stdout
    client, runs = runs_of(store, "e2e")
    run = runs[0]
    assert len(runs) == 1 and run.info.status == "FINISHED"
    # params: the flattened resolved config
    assert run.data.params["model.name"] == "cnn"
    assert run.data.params["dataset.path"] == str(idx_dir)
    assert run.data.params["trainer.epochs"] == "3"
    assert run.data.params["data.train_size"] == "270"
    # tags
    assert run.data.tags["dataset"] == "fashion_mnist" and run.data.tags["model"] == "cnn"
    assert run.data.tags["device"] == "CPU" and run.data.tags["stopped_by"] == "epochs"
    assert "model=cnn" in run.data.tags["overrides"]
    # per-epoch curves and final metrics
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2, 3], name
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs[0] > lrs[-1], "the cosine schedule must show in the logged learning rate"
    metrics = run.data.metrics
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["params"] > 0 and metrics["training_seconds"] > 0 and metrics["epochs_run"] == 3
    for cls in FASHION_CLASSES:
        assert f"test_recall_{metric_safe(cls)}" in metrics and f"test_precision_{metric_safe(cls)}" in metrics
    # artifacts
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    # the architecture diagram needs Graphviz; without it the run says why in a tag
    assert artifacts - {"architecture.png"} == ARTIFACTS
    assert ("architecture.png" in artifacts) == (shutil.which("dot") is not None)
    local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl"))
    report = open(f"{local}/classification_report.txt").read()
    assert "Ankle boot" in report and "recall" in report
    assert open(f"{local}/curves.png", "rb").read(4) == b"\x89PNG"
    model = keras.saving.load_model(f"{local}/model/model.keras")
    probs = model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    assert probs.shape == (2, 10)


def test_the_embedded_default_learns_digits(cli, tmp_path):
    result = cli("trainer.epochs=8", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "nnlab")
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["test_accuracy"] > 0.9
    assert (tmp_path / "mlartifacts").is_dir()


def test_missing_data_fails_the_run_with_one_sentence(cli, tmp_path, store):
    result = cli("dataset=mnist", f"dataset.path={tmp_path / 'nowhere'}", "dataset.download=false",
                 f"tracking.uri={store}", "tracking.experiment=bad", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("nnlab: error:")]
    assert len(errors) == 1
    assert "train-images-idx3-ubyte.gz" in errors[0] and str(tmp_path / "nowhere") in errors[0]
    client, runs = runs_of(store, "bad")
    assert runs[0].info.status == "FAILED"
    assert "files are missing" in runs[0].data.tags["error"]
    assert "model" not in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_too_many_broken_images_fail_the_run_and_name_the_files(cli, tmp_path, store):
    root = make_split_tree(tmp_path / "pets", ["cat", "dog"], 5, 2)
    for f in sorted((root / "train" / "cat").iterdir())[:2]:
        corrupt(f)
    result = cli("dataset=image_folder", f"dataset.path={root}", "dataset.image_size=[8,8]",
                 f"tracking.uri={store}", "tracking.experiment=broken", cwd=tmp_path,
                 env={"NNLAB_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab: error:")]
    assert "2 of 14 images" in error and "0000.png" in error and "dataset.max_bad_fraction" in error
    client, runs = runs_of(store, "broken")
    assert runs[0].info.status == "FAILED" and "cannot be read" in runs[0].data.tags["error"]


def test_a_missing_image_folder_is_one_sentence_with_the_layout(cli, tmp_path, store):
    result = cli("dataset=fruits", f"dataset.path={tmp_path / 'fruits'}", f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab: error:")]
    assert f"{tmp_path / 'fruits'} does not exist" in error and "<path>/Training/<class>/" in error


def test_a_terminated_job_marks_its_run_killed(tmp_path, store):
    # The store exists before the job starts: this test's polling client would otherwise create its tables while
    # the job does (only nnlab's own processes take the store lock), and that race, not SIGTERM, is then tested.
    MlflowClient(store).search_experiments()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "nnlab", "trainer.epochs=100000", f"tracking.uri={store}",
                             "tracking.experiment=term"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    client, deadline = MlflowClient(store), time.time() + 120
    while time.time() < deadline:  # wait until training has started and logged an epoch
        exp = client.get_experiment_by_name("term")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted (stopped by SIGTERM)" in stderr
    (run,) = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    assert run.info.status == "KILLED" and "stopped by SIGTERM" in run.data.tags["error"]


def test_the_time_budget_stops_a_run_and_is_recorded(cli, tmp_path, store):
    result = cli("trainer.epochs=500", "trainer.max_minutes=0.05", "dataset.limit=200",
                 f"tracking.uri={store}", "tracking.experiment=budget", "trainer.save_model=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = runs_of(store, "budget")
    assert runs[0].data.tags["stopped_by"] == "time_budget"
    assert runs[0].data.metrics["epochs_run"] < 500


def test_a_user_config_dir_adds_a_model_and_an_experiment_without_package_edits(cli, tmp_path, store):
    shutil.copytree(REPO_ROOT / "experiments", tmp_path / "experiments")
    result = cli("hydra.searchpath=[file://experiments]", "+experiment=digits_skip", "trainer.epochs=2",
                 f"tracking.uri={store}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = runs_of(store, "my_lab")
    assert runs[0].data.params["model.name"] == "mlp_skip"
    assert runs[0].info.status == "FINISHED"


def test_a_multirun_sweep_logs_one_finished_run_per_job(cli, tmp_path, store):
    result = cli("-m", "optimizer=sgd,adam", "trainer.epochs=1", "dataset.limit=200", "trainer.save_model=false",
                 f"tracking.uri={store}", "tracking.experiment=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, runs = runs_of(store, "sweep")
    jobs = [r for r in runs if r.data.tags.get("nnlab.role") == "job"]
    assert sorted(r.data.tags["optimizer"] for r in jobs) == ["adam", "sgd"]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 3  # + the sweep's parent run


def test_the_boston_preset_trains_an_ensemble_and_logs_what_averaging_gained(cli, tmp_path, store):
    from data_fixtures import make_boston

    make_boston(tmp_path / "boston" / "housing.data")
    result = cli("+experiment=boston_mlp", f"dataset.path={tmp_path / 'boston'}", "model.ensemble=2",
                 "model.widths=[16,8]", "trainer.epochs=3", "trainer.batch_size=64", "trainer.plot_model=false",
                 f"tracking.uri={store}", "tracking.experiment=boston_e2e", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, (run,) = runs_of(store, "boston_e2e")
    assert run.info.status == "FINISHED" and run.data.params["model.ensemble"] == "2"
    metrics = run.data.metrics
    assert metrics["test_mae"] <= metrics["test_mae_members"] + 1e-6  # never worse than its average member
    assert {"test_rmse", "test_rmse_members", "test_mae_train_mean"} <= set(metrics)
    import nnlab.models  # noqa: F401  (the averaging layer an ensemble's file names)

    model = keras.saving.load_model(client.download_artifacts(run.info.run_id, "model/model.keras", str(tmp_path)))
    assert [layer.name for layer in model.layers][-1] == "ensemble"
