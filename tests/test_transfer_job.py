"""The hot-dog lab as a user runs it: pretrain a backbone with nnlab, export it, load it through
model.weights, unfreeze it in stages; plus the parameter limits, on generated images."""

import shutil

import mlflow
import pytest
from data_fixtures import make_split_tree
from mlflow.tracking import MlflowClient

from nnlab.job import netron_view

pytestmark = pytest.mark.slow
SMALL_BACKBONE = ["model=transfer", "model.backbone=MobileNetV2", "+model.backbone_kwargs.alpha=0.35"]


def only_run(store, experiment):
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def error_line(result):
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab: error:")]
    return line


def test_pretrain_export_then_transfer_with_gradual_unfreezing(cli, tmp_path, store):
    env = {"NNLAB_CACHE_DIR": str(tmp_path / "cache")}
    shapes = make_split_tree(tmp_path / "shapes", ["red", "green", "blue"], 8, 2, size=(32, 32))
    pretrained = tmp_path / "pretrained"
    result = cli("dataset=image_folder", f"dataset.path={shapes}", "dataset.image_size=[32,32]", *SMALL_BACKBONE,
                 "trainer.epochs=1", "trainer.batch_size=8", f"trainer.export_dir={pretrained}",
                 "trainer.plot_model=false", f"tracking.uri={store}", "tracking.experiment=pretrain",
                 cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (pretrained / "model.keras").is_file() and not list(pretrained.glob(".*partial"))

    hotdog = make_split_tree(tmp_path / "hotdog", ["hot_dog", "not_hot_dog"], 10, 4, size=(40, 40))
    stages = "[{epochs:1,trainable:none,learning_rate:0.001},{epochs:2,trainable:all,learning_rate:0.0001}]"
    result = cli("+experiment=hotdog_transfer", f"dataset.path={hotdog}", "dataset.image_size=[32,32]",
                 f"model.weights={pretrained / 'model.keras'}", f"trainer.stages={stages}", "trainer.batch_size=8",
                 f"tracking.uri={store}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(store, "hotdog")
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage_starts"] == "2" and run.data.metrics["epochs_run"] == 3
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs == pytest.approx([0.001, 0.0001, 0.0001])
    assert 0 < run.data.metrics["params"] <= 5_000_000
    assert {"test_accuracy", "test_precision_hot_dog", "test_recall_not_hot_dog"} <= set(run.data.metrics)
    mlflow.set_tracking_uri(store)  # MLflow 3 lists a logged model's files (runs:/<id>/transfer: named after the
    saved = {a.path for a in client.list_artifacts(run.info.run_id, "model")}  # model) via the global tracking URI
    assert {"model/model.keras", "model/model.h5"} <= saved
    assert "transfer/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "transfer")}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    if shutil.which("dot"):
        assert "architecture.png" in artifacts
    else:
        assert "Graphviz" in run.data.tags["architecture_diagram"]
    missing = netron_view.missing()  # the preset's trainer.netron: Netron's drawing, or why not
    assert ("netron.png" in artifacts) if missing is None else run.data.tags["netron"] == f"skipped: {missing}"


def test_max_params_and_missing_weights_fail_before_training(cli, tmp_path, store):
    hotdog = make_split_tree(tmp_path / "hotdog", ["hot_dog", "not_hot_dog"], 4, 2, size=(32, 32))
    common = ["+experiment=hotdog_transfer", f"dataset.path={hotdog}", "dataset.image_size=[32,32]",
              f"tracking.uri={store}"]
    env = {"NNLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = cli(*common, "model.weights=null", "model.max_params=100000", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "over model.max_params=100,000" in error_line(result)
    result = cli(*common, f"model.weights={tmp_path / 'none.keras'}", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert f"model.weights file {tmp_path / 'none.keras'} does not exist" in error_line(result)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("hotdog").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]
    assert all(r.data.metrics.get("epochs_run") is None for r in runs)  # nothing was trained


def test_param_budget_is_solved_and_logged(cli, tmp_path, store):
    result = cli("model.depth=3", "model.param_budget=20000", "trainer.epochs=1", f"tracking.uri={store}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(store, "nnlab")
    assert abs(run.data.metrics["params"] - 20000) <= 1000
    assert int(run.data.params["model.solved_width"]) > 0 and run.data.params["model.param_budget"] == "20000"
