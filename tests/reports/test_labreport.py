"""`nnlab report --lab NAME` (nnlab/reports/labreport.py): a lab's report from a store of tiny runs trained in this process
(fashion_mlp on generated IDX files, two jobs of the dropout homework's sweep preset), and from runs logged by hand
for the bars and for the documented command (no training)."""

import csv
import re

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from PIL import Image
from tests_support import make_idx_dataset
from trained_runs import train_run

from nnlab.errors import ConfigError, NnlabError
from nnlab.reports import labreport
from nnlab.tracking.store import open_store, resolve_uri
from nnlab.tracking.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG


@pytest.fixture(scope="module")
def lab_store(runs_root, runs_store) -> str:
    """fashion_mlp once (2 epochs, 16 units), and the dropout homework at dropout 0 and 0.5 (4 epochs, 32 units),
    tagged as one sweep, beside an older sweep of the same preset that the report must leave out."""
    idx = make_idx_dataset(runs_root / "fashion-mnist")
    train_run(runs_store, "+experiment=fashion_mlp", f"dataset.path={idx}", "dataset.download=false",
              "trainer.epochs=2", "model.widths=[16]", experiment="fashion_mnist")
    client = MlflowClient(runs_store)
    for dropout in (0.0, 0.5):
        run_id = train_run(runs_store, "+sweep=dropout_regression", f"model.dropout={dropout}", "model.widths=[32,32]",
                           "trainer.epochs=4", "dataset.test_count=100", experiment="dropout_regression")
        client.set_tag(run_id, SWEEP_TAG, "dropout_regression-new")
    exp = client.get_experiment_by_name("dropout_regression").experiment_id
    old = client.create_run(exp, start_time=1000, run_name="old-job", tags={
        SWEEP_TAG: "dropout_regression-old", "dataset": "noisy_curve", "model": "mlp"}).info.run_id
    client.log_batch(old, params=[Param("sweep_name", "dropout_regression"), Param("model.dropout", "0.9")],
                     metrics=[Metric("test_mae", 9.0, 0, 0)])
    client.set_terminated(old)
    return runs_store


@pytest.fixture
def nnlab(nnlab_cli):
    return nnlab_cli


def test_a_presets_lab_report_has_the_table_the_gaps_the_bar_and_the_runs_figures(lab_store, nnlab, tmp_path):
    out = tmp_path / "rep"
    code, stdout, err = nnlab("report", "--lab", "fashion_mlp", "--uri", lab_store, "--out", str(out))
    assert code == 0, err
    assert f"written to {out / 'lab_fashion_mlp.md'}, {out / 'lab_fashion_mlp.html'}" in stdout
    md, page = (out / "lab_fashion_mlp.md").read_text(), (out / "lab_fashion_mlp.html").read_text()
    for column in ("train_accuracy", "val_accuracy", "test_accuracy", "gap_accuracy", "last_gap_accuracy",
                   "test_gap_accuracy", "best_epoch", "bar"):
        assert column in md and f'title="{column}"' in page  # a header cell (it may wrap after its underscores)
    assert "test_accuracy >= 0.85 (the course's bar)" in md and "of 1 finished runs meet it" in md
    assert "python -m nnlab +experiment=fashion_mlp" in md and "90.62 %" in md  # the command, the measured result
    for figure in ("curves.png", "confusion_matrix.png"):
        link = next(line for line in md.splitlines() if line.startswith(f"![{figure}](figures/"))
        assert (out / link.split("(", 1)[1].rstrip(")")).stat().st_size > 0
        assert f'alt="{figure}"' in page
    assert page.startswith("<!DOCTYPE html>") and '<table class="report">' in page
    params = int(MlflowClient(lab_store).search_runs(
        [MlflowClient(lab_store).get_experiment_by_name("fashion_mnist").experiment_id])[0].data.metrics["params"])
    assert f"{params:,}" in md and f'<td class="num">{params:,}</td>' in page and f"{params}.0" not in md + page

    client = MlflowClient(lab_store)
    table, _ = labreport.build(client, "fashion_mlp", tmp_path / "again")
    run = labreport.lab_runs(client, labreport.get_lab("fashion_mlp"))[0]
    m = run.data.metrics
    assert len(table) == 1 and table["bar"][0] == ("PASS" if m["test_accuracy"] >= 0.85 else "FAIL")
    # no early stopping: the tested model is the last epoch's, so the gap is its training score minus the test's
    assert table["test_gap_accuracy"][0] == pytest.approx(m["accuracy"] - m["test_accuracy"])
    assert table["gap_accuracy"][0] == pytest.approx(m["best_accuracy"] - m["best_val_accuracy"])


def test_a_sweep_labs_report_reads_its_latest_sweep_and_shows_the_overfitting_gaps(lab_store, tmp_path):
    client = MlflowClient(lab_store)
    table, paths = labreport.build(client, "dropout_regression", tmp_path / "rep")
    assert sorted(table["model.dropout"]) == ["0.0", "0.5"]  # the older sweep's job (0.9) is left out
    for column in ("train_mae", "val_mae", "gap_mae", "last_gap_mae", "test_mae", "test_gap_mae", "test_mae_truth"):
        assert table[column].notna().all(), column
    assert "bar" not in table
    md = paths[0].read_text()
    assert "No bar stated" in md and "last_gap_mae" in md
    assert "![val_curves.png](val_curves.png)" in md and (tmp_path / "rep" / "val_curves.png").exists()
    assert md.count("### Run ") == 2 and md.count("![curves.png](figures/") == 2  # every run's figures
    assert (tmp_path / "rep" / "table.csv").exists()  # report.py's writers


def test_no_runs_for_a_lab_names_the_command_to_run_first(lab_store, nnlab, tmp_path):
    code, _, err = nnlab("report", "--lab", "faces_age", "--uri", lab_store, "--out", str(tmp_path / "rep"))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("nnlab: error: No runs of lab 'faces_age' in the store")
    assert "run `python -m nnlab +experiment=faces_age` first" in lines[0]
    assert not (tmp_path / "rep").exists()
    code, _, err = nnlab("report", "--lab", "faces_agee", "--uri", lab_store)
    assert code == 2 and "did you mean 'faces_age'?" in err


def log_run(client, experiment, name, tags, metrics, params=None):
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    client.log_batch(run, params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run)
    return run


def test_bars_compare_with_another_metric_and_count_the_time_limit(store, tmp_path):
    client = MlflowClient(store)
    lstm = {"dataset": "airline", "model": "lstm", "task": "regression"}
    log_run(client, "airline", "beats", lstm, {"test_rmse_original": 16.5, "test_rmse_original_seasonal_naive": 41.9})
    log_run(client, "airline", "loses", lstm, {"test_rmse_original": 50.0, "test_rmse_original_seasonal_naive": 41.9})
    table, paths = labreport.build(client, "airline_lstm", tmp_path / "airline")
    assert list(table["run"]) == ["beats", "loses"] and list(table["bar"]) == ["PASS", "FAIL"]
    md, page = paths[0].read_text(), paths[1].read_text()
    assert "**PASS**, 1 of 2 finished runs meet it; best run 'beats'" in md
    assert '<b class="pass">PASS</b>' in page  # the bar's sentence, in green
    assert re.search(r"\| beats .*\| \*\*PASS\*\* .*\n\| loses .*\| \*\*FAIL\*\* ", md)  # bold in the table
    assert '<td class="pass">PASS</td>' in page and '<td class="fail">FAIL</td>' in page
    assert ".pass { color: #1a7f37" in page and ".fail { color: #cf222e" in page

    cnn = {"dataset": "fruits", "model": "cnn", "task": "classification"}
    log_run(client, "fruits", "too slow", cnn, {"test_accuracy": 1.0, "training_seconds": 3700.0})
    log_run(client, "fruits", "in time", cnn, {"test_accuracy": 0.95, "training_seconds": 600.0})
    # early stopping restored the best epoch: the tested model's training score is the best epoch's
    log_run(client, "fruits", "restored", cnn, {"test_accuracy": 0.5, "training_seconds": 60.0, "best_accuracy": 0.9,
                                                 "accuracy": 0.99}, {"trainer.early_stopping.patience": 3})
    table, paths = labreport.build(client, "fruits_cnn", tmp_path / "fruits")
    assert table.set_index("run")["bar"].to_dict() == {"too slow": "FAIL", "in time": "PASS", "restored": "FAIL"}
    assert table.set_index("run")["test_gap_accuracy"]["restored"] == pytest.approx(0.4)
    assert "within 60 min (training_seconds)" in paths[0].read_text()


def test_unknown_lab_fails_before_the_store_is_opened(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'hotdog'"):
        labreport.main("hotdogg", f"sqlite:///{tmp_path}/never.db", None)
    assert not (tmp_path / "never.db").exists()
    with pytest.raises(NnlabError, match="No runs of lab 'hotdog'"):
        labreport.build(MlflowClient(f"sqlite:///{tmp_path}/empty.db"), "hotdog", tmp_path / "rep")


def log_sweep_job(client, exp_id, parent, optimizer, accuracy, png):
    """A finished job of `nnlab sweep fashion_optimizers`, as the sweep logs it (tags, params, metrics, curves.png)."""
    run = client.create_run(exp_id, run_name=f"optimizer={optimizer}", tags={
        PARENT_TAG: parent, SWEEP_TAG: "fashion_optimizers-1", ROLE_TAG: "job", "dataset": "fashion_mnist",
        "model": "mlp", "task": "classification"}).info.run_id
    metrics = {"test_accuracy": accuracy, "test_loss": 1 - accuracy, "accuracy": 0.9, "val_accuracy": 0.8,
               "best_accuracy": 0.9, "best_val_accuracy": accuracy, "best_epoch": 12.0, "epochs_run": 15.0,
               "params": 825514.0, "training_seconds": 301.5}
    client.log_batch(run, params=[Param("sweep_name", "fashion_optimizers"), Param("optimizer.name", optimizer)],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.log_artifact(run, str(png))
    client.set_terminated(run)


def test_the_documented_command_writes_the_report_under_the_working_directory(nnlab, tmp_path, monkeypatch):
    """`nnlab report --lab fashion_optimizers`, exactly as the lab index says, after the sweep: the store is
    ./mlflow.db and the report goes to ./reports/lab_fashion_optimizers, a relative folder that the best run's
    figures are downloaded into (MLflow gives their absolute paths) and linked from."""
    work = tmp_path / "course"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    png = tmp_path / "curves.png"
    Image.new("RGB", (8, 8), "white").save(png)
    _, client, exp_id = open_store(resolve_uri("sqlite:///mlflow.db"), "fashion_optimizers")
    parent = client.create_run(exp_id, run_name="fashion_optimizers-1", tags={
        SWEEP_TAG: "fashion_optimizers-1", ROLE_TAG: "sweep"}).info.run_id
    for optimizer, accuracy in (("sgd", 0.70), ("adam", 0.777), ("rmsprop", 0.75)):
        log_sweep_job(client, exp_id, parent, optimizer, accuracy, png)

    code, stdout, err = nnlab("report", "--lab", "fashion_optimizers")
    assert code == 0, err
    folder = "reports/lab_fashion_optimizers"
    assert f"written to {folder}/lab_fashion_optimizers.md, {folder}/lab_fashion_optimizers.html" in stdout
    md = (work / folder / "lab_fashion_optimizers.md").read_text()
    page = (work / folder / "lab_fashion_optimizers.html").read_text()
    link = next(line for line in md.splitlines() if line.startswith("![curves.png](figures/"))
    assert (work / folder / link.split("(", 1)[1].rstrip(")")).stat().st_size > 0
    assert 'src="figures/' in page
    rows = [line for line in md.splitlines() if line.startswith("| optimizer=")]
    assert [row.split("|")[1].strip() for row in rows] == ["optimizer=adam", "optimizer=rmsprop", "optimizer=sgd"]
    header = next(line for line in md.splitlines() if line.startswith("| run "))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert {"best_epoch", "epochs_run", "params"} <= set(columns)
    for row in rows:  # counts as integers, not 825514.0 and 12.0
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        assert (cells["params"], cells["best_epoch"], cells["epochs_run"]) == ("825,514", "12", "15")
    assert "825514.0" not in md + page and "| 12.0" not in md
    assert "825,514" in stdout  # the console's table too
    with open(work / folder / "table.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert (first["params"], first["best_epoch"], first["training_seconds"]) == ("825514", "12", "301.5")  # raw
