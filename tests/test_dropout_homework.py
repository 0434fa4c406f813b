"""The dropout homework: the `dropout_regression` sweep preset, and the report's train-validation gap column."""

import pytest
from hydra import compose, initialize_config_module
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from nnlab.reports import report
from nnlab.tracking.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def test_the_preset_sweeps_dropout_of_a_wide_mlp_on_the_noisy_curve_without_early_stopping():
    cfg = composed("+sweep=dropout_regression", hydra=True)
    assert cfg.hydra.sweeper.params["model.dropout"] == "0.0,0.2,0.5"
    assert cfg.dataset.name == "noisy_curve" and cfg.model.name == "mlp" and min(cfg.model.widths) >= 256
    typed = OmegaConf.to_object(composed("+sweep=dropout_regression", "model.dropout=0.5"))
    assert typed.trainer.early_stopping.patience is None  # the curves must show the overfitting happen
    assert typed.model.dropout == 0.5 and typed.dataset.count // 2 < typed.model.widths[0]


def log_job(client, exp, parent, dropout, train_mae, val_mae, task="regression"):
    tags = {PARENT_TAG: parent, SWEEP_TAG: "d1", ROLE_TAG: "job", "task": task}
    run = client.create_run(exp, run_name=f"model.dropout={dropout}", tags=tags).info.run_id
    metrics = {"best_mae": train_mae, "best_val_mae": val_mae, "best_loss": train_mae ** 2,
               "best_val_loss": val_mae ** 2, "test_mae": val_mae, "best_epoch": 3}
    client.log_batch(run, params=[Param("model.dropout", str(dropout))],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    # the last epoch (4) overfits more than the best (3): training error down, validation error up
    curves = {"mae": [0.5, 0.3, train_mae, train_mae / 2], "val_mae": [0.5, 0.3, val_mae, 2 * val_mae]}
    for key, values in curves.items():
        client.log_batch(run, metrics=[Metric(key, v, 0, i + 1) for i, v in enumerate(values)])
    client.set_terminated(run, "FINISHED")


def test_the_report_shows_the_gap_between_validation_and_training_mae_at_the_best_and_last_epoch(store, tmp_path):
    client = MlflowClient(store)
    exp = client.create_experiment("dropout_regression")
    parent = client.create_run(exp, run_name="d1", tags={SWEEP_TAG: "d1", ROLE_TAG: "sweep"}).info.run_id
    for dropout, train, val in ((0.0, 0.10, 0.25), (0.2, 0.15, 0.24), (0.5, 0.20, 0.23)):
        log_job(client, exp, parent, dropout, train, val)
    result = report.build(client, sweep="d1", out=tmp_path / "rep")
    table = result.table.set_index("model.dropout")
    assert table["gap_mae"].to_dict() == pytest.approx({"0.0": 0.15, "0.2": 0.09, "0.5": 0.03})  # best epoch
    assert table["last_gap_mae"].to_dict() == pytest.approx({"0.0": 0.45, "0.2": 0.405, "0.5": 0.36})
    assert "gap_mae" in (tmp_path / "rep" / "table.md").read_text()
    assert (tmp_path / "rep" / "val_curves.png").stat().st_size > 0  # the overlaid validation curves


def test_an_accuracy_gap_counts_training_minus_validation(store):
    client = MlflowClient(store)
    exp = client.create_experiment("acc")
    run = client.create_run(exp, run_name="one", tags={"task": "classification"}).info.run_id
    client.log_batch(run, metrics=[Metric(k, v, 0, 0) for k, v in
                                   {"best_accuracy": 0.99, "best_val_accuracy": 0.90, "test_accuracy": 0.9}.items()])
    client.set_terminated(run, "FINISHED")
    assert report.build(client, experiment="acc").table["gap_accuracy"].tolist() == pytest.approx([0.09])
