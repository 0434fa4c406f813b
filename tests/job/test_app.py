"""The composed job in-process (compose -> build -> fit -> log), as lightning-hydra-template tests train(cfg):
one test per task, each reading back what MLflow stored."""

import re
from pathlib import Path

import pytest
from data_fixtures import make_boston
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from nnlab.job import app


def composed(*overrides: str):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def job(store: str, *overrides: str):
    """Run the job in this process; return (the sweeper's objective, the run, its artifact paths)."""
    objective = app.run(composed(f"tracking.uri={store}", "tracking.experiment=inproc", "trainer.verbose=0",
                                 "trainer.plot_model=false", *overrides))
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("inproc").experiment_id])
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    paths |= {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    return objective, run, paths


def test_a_classification_job_logs_its_tasks_figures_and_returns_the_validation_accuracy(store):
    objective, run, paths = job(store, "trainer.epochs=2", "model.width=32")
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "classification"
    assert objective == pytest.approx(m["best_val_accuracy"])
    assert {"curves.png", "confusion_matrix.png", "classification_report.json", "config.yaml",
            "model/model.keras"} <= paths
    assert "test_f1_macro" in m and m["epochs_run"] == 2
    assert run.data.params["trainer.epochs"] == "2" and run.data.params["trainer.batch_size"] == "64"


def test_a_regression_job_scores_original_units_and_returns_the_validation_loss(store, tmp_path: Path):
    make_boston(tmp_path / "boston" / "housing.data", rows=120)
    objective, run, paths = job(store, "dataset=boston", f"dataset.path={tmp_path / 'boston'}", "trainer.epochs=3",
                                "model.widths=[8]")
    m = run.data.metrics
    assert run.data.tags["task"] == "regression"
    assert objective == pytest.approx(m["best_val_loss"])
    assert {"test_mae", "test_rmse", "test_mae_train_mean"} <= set(m)
    assert "predictions.png" in paths and "confusion_matrix.png" not in paths


def test_early_stopping_watches_the_tasks_monitor_by_default(store):
    objective, run, _ = job(store, "trainer.epochs=3", "trainer.early_stopping.patience=1", "model.width=16")
    assert run.data.params["trainer.early_stopping.monitor"] == "None"  # None: the task's (val_loss here)
    assert run.data.metrics["best_val_loss"] == pytest.approx(min(
        h.value for h in MlflowClient(store).get_metric_history(run.info.run_id, "val_loss")))


def test_a_segmentation_job_logs_iou_masks_and_returns_the_validation_mean_iou(store):
    objective, run, paths = job(store, "dataset=scenes", "dataset.count=60", "dataset.canvas_size=[16,16]",
                                "dataset.item_size=[6,8]", "dataset.items=[1,2]", "model=unet", "model.depth=2",
                                "model.filters=4", "trainer.epochs=2", "trainer.batch_size=8", "trainer.loss=ce_dice",
                                "augment.flip=horizontal", "augment.shift=0.1")
    m = run.data.metrics
    assert run.data.tags["task"] == "segmentation"
    assert objective == pytest.approx(m["best_val_mean_iou"])
    assert {"test_mean_iou", "test_dice", "test_pixel_accuracy", "test_iou_background"} <= set(m)
    assert {"masks.png", "iou_per_class.md", "iou_per_class.json", "curves.png"} <= paths
    assert "confusion_matrix.png" not in paths and m["best_epoch"] in (1, 2)


def test_early_stopping_stops_the_run_and_is_recorded_with_its_best_epoch(store):
    # An improvement of 10 in val_loss never comes: epoch 1 stays the best and patience 1 stops after epoch 2.
    _, run, _ = job(store, "trainer.epochs=20", "trainer.early_stopping.patience=1",
                    "trainer.early_stopping.min_delta=10", "model.width=16")
    assert run.data.tags["stopped_by"] == "early_stopping"
    assert run.data.metrics["epochs_run"] == 2 and run.data.metrics["best_epoch"] == 1


def test_the_pets_unet_preset_trains_on_the_oxford_pets_layout(store, tmp_path):
    from data_fixtures import make_oxford_pets

    root = make_oxford_pets(tmp_path / "oxford-pets")
    _, run, paths = job(store, "+experiment=pets_unet", f"dataset.path={root}", "dataset.image_size=[32,32]",
                        "model.depth=2", "model.filters=4", "trainer.epochs=1", "trainer.batch_size=8",
                        "tracking.experiment=inproc")
    assert run.data.tags["task"] == "segmentation" and run.data.params["dataset.name"] == "oxford_pets"
    assert "test_iou_pet" in run.data.metrics and "masks.png" in paths


def test_a_job_logs_its_splits_as_datasets_its_model_as_an_mlflow_model_and_a_one_line_description(store):
    import re

    _, run, paths = job(store, "trainer.epochs=2", "model.width=16")
    client = MlflowClient(store)
    inputs = {i.dataset.name: [t.value for t in i.tags] for i in run.inputs.dataset_inputs}
    assert inputs == {"digits-train": ["training"], "digits-val": ["validation"], "digits-test": ["test"]}
    assert {i.dataset.source_type for i in run.inputs.dataset_inputs} == {"code"}  # bundled: no files of its own
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "mlp" and logged.source_run_id == run.info.run_id  # named after the run's model
    assert "model/model.keras" in paths  # the run's file, and beside it the MLflow Model at runs:/<id>/mlp
    assert "mlp/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "mlp")}
    note = run.data.tags["mlflow.note.content"]
    accuracy = 100 * run.data.metrics["test_accuracy"]
    assert re.fullmatch(r"mlp on digits: test accuracy \d+\.\d%, trained all 2 epochs", note)
    assert f"{accuracy:.1f}%" in note
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_time_budget_stop_is_in_the_description_and_without_a_saved_model_no_mlflow_model(store):
    _, run, paths = job(store, "trainer.epochs=5", "trainer.max_minutes=0.00001", "model.width=8",
                        "trainer.save_model=false")
    assert run.data.tags["stopped_by"] == "time_budget"
    # The budget is spent within the first batch: the run stops there, in epoch 1.
    assert re.search(r"stopped by the time budget \d+% into epoch 1 of 5$", run.data.tags["mlflow.note.content"])
    assert run.outputs is None or not run.outputs.model_outputs
    assert not any(p.startswith("model/") for p in paths)


def test_the_description_gives_scores_as_percentages_and_errors_as_numbers():
    from nnlab.tasks import get_task

    assert get_task("classification").describe({"test_accuracy": 0.92561}) == "test accuracy 92.6%"
    assert get_task("segmentation").describe({"test_mean_iou": 0.7134}) == "test mean IoU 71.3%"
    assert get_task("regression").describe({"test_mae": 0.31234}) == "test MAE 0.3123"
    assert (get_task("regression").describe({"test_mae": 0.31234, "test_mae_original": 2.4139})
            == "test MAE 0.3123 (2.414 in the target's units)")
    assert get_task("regression").describe({}) == "no test MAE"


def test_a_store_url_with_a_password_is_in_no_printed_line_nor_in_hydras_files(nnlab_main, tmp_path):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, errors = nnlab_main(f"tracking.uri=http://alice:S3cretPw@127.0.0.1:{port}", "trainer.epochs=1")
    assert code != 0 and len(errors) == 1 and "cannot be reached" in errors[0]
    assert "S3cretPw" not in errors[0] and f"http://127.0.0.1:{port}" in errors[0]
    saved = [p for p in (tmp_path / "outputs").rglob("*.yaml")]
    assert saved and not any("S3cretPw" in p.read_text() for p in saved)
    assert any(f"http://127.0.0.1:{port}" in p.read_text() for p in saved)
