"""`nnlab report`: tables and figures from runs made directly in a private store (no training)."""

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.reports import register, report
from nnlab.tracking.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG


def log_run(client, exp_id, name, params, metrics, curves=None, tags=None, status="FINISHED"):
    run = client.create_run(exp_id, run_name=name, tags=tags or {})
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    for key, values in (curves or {}).items():
        client.log_batch(rid, metrics=[Metric(key, v, 0, i + 1) for i, v in enumerate(values)])
    client.set_terminated(rid, status)
    return rid


@pytest.fixture
def sweep(store):
    """A parent and three depth jobs; the best epoch (by val_loss) is not the last one."""
    client = MlflowClient(store)
    exp = client.create_experiment("study")
    parent = client.create_run(exp, run_name="depth-sweep", tags={SWEEP_TAG: "s1", ROLE_TAG: "sweep"}).info.run_id
    tags = {PARENT_TAG: parent, SWEEP_TAG: "s1", ROLE_TAG: "job"}
    for depth, acc in ((2, 0.80), (5, 0.90), (3, 0.85)):
        log_run(client, exp, f"model.depth={depth}", {"model.depth": depth, "seed": 1, "tracking.run_name": depth,
                                                      "data.train_size": 100 + depth},
                {"test_accuracy": acc, "test_loss": 1 - acc, "best_epoch": 2, "best_val_accuracy": acc - 0.01,
                 "best_val_loss": 0.5, "best_loss": 0.4, "best_accuracy": acc + 0.05, "params": 1000 * depth,
                 "training_seconds": 3.0, "epochs_run": 3, "val_accuracy": 0.1},
                curves={"val_accuracy": [0.5, acc - 0.01, 0.1]}, tags=tags)
    log_run(client, exp, "stray", {"model.depth": 9}, {"test_accuracy": 0.1})  # same experiment, not in the sweep
    return client, parent


def test_table_has_swept_columns_best_epoch_metrics_and_sorts_by_accuracy(sweep, tmp_path):
    client, parent = sweep
    result = report.build(client, parent=parent, out=tmp_path / "rep")
    table = result.table
    assert result.swept == ["model.depth"]  # seed is equal, tracking.* and data.* are not choices
    assert list(table["model.depth"]) == ["5", "3", "2"]  # best test accuracy first
    assert list(table["val_accuracy"]) == pytest.approx([0.89, 0.84, 0.79])  # the best epoch's, not the last (0.1)
    assert list(table["train_accuracy"]) == pytest.approx([0.95, 0.90, 0.85])
    assert list(table["params"]) == [5000, 3000, 2000]
    assert {"run", "test_accuracy", "test_loss", "best_epoch", "training_seconds", "status"} <= set(table)
    assert "stray" not in set(table["run"])


def test_every_format_and_both_figures_are_written_and_logged_to_the_parent(sweep, tmp_path):
    client, parent = sweep
    out = tmp_path / "rep"
    result = report.build(client, parent=parent, out=out, log_to_parent=True)
    names = {p.name for p in result.paths}
    assert names == {"table.md", "table.csv", "table.tex", "table.html", "metric_vs_params.png", "val_curves.png"}
    assert "| model.depth" in (out / "table.md").read_text().replace("|   model.depth", "| model.depth")
    assert pd.read_csv(out / "table.csv")["model.depth"].tolist() == [5, 3, 2]
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    assert "<table" in (out / "table.html").read_text()
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {f"report/{n}" for n in names}


def test_selection_by_sweep_id_or_experiment_and_column_choice(sweep):
    client, _ = sweep
    by_sweep = report.build(client, sweep="s1", columns=["model.depth", "test_accuracy"], sort="model.depth")
    assert list(by_sweep.table.columns) == ["run", "model.depth", "test_accuracy"]
    assert list(by_sweep.table["model.depth"]) == ["2", "3", "5"] and by_sweep.paths == []
    by_experiment = report.build(client, experiment="study", formats=["csv"])
    assert len(by_experiment.table) == 4  # every run but the sweep's parent


def test_columns_without_sort_keep_the_headline_order_and_all_figures(sweep, tmp_path):
    client, parent = sweep
    result = report.build(client, parent=parent, columns=["val_loss"], out=tmp_path / "rep")
    assert list(result.table.columns) == ["run", "val_loss"]
    assert list(result.table["run"]) == ["model.depth=5", "model.depth=3", "model.depth=2"]  # by test accuracy
    assert {p.name for p in result.paths} >= {"metric_vs_params.png", "val_curves.png"}


def test_bad_requests_get_one_sentence(sweep):
    client, parent = sweep
    with pytest.raises(NnlabError, match="did you mean 'study'"):
        report.build(client, experiment="studdy")
    with pytest.raises(NnlabError, match="No runs carry sweep id 'nope'"):
        report.build(client, sweep="nope")
    with pytest.raises(NnlabError, match="No run 'f00'"):
        report.build(client, parent="f00")
    with pytest.raises(NnlabError, match="Unknown column.*test_acc"):
        report.build(client, parent=parent, columns=["test_acc"])
    with pytest.raises(NnlabError, match="did you mean 'test_accuracy'"):
        report.build(client, parent=parent, sort="test_acuracy")
    with pytest.raises(NnlabError, match="Unknown report format"):
        report.build(client, parent=parent, formats=["pdf"])
    with pytest.raises(NnlabError, match="exactly one"):
        report.build(client, parent=parent, sweep="s1")


def test_regression_runs_sort_by_test_mae_ascending(store):
    client = MlflowClient(store)
    exp = client.create_experiment("boston")
    for loss, mae in (("mse", 2.5), ("huber", 2.2), ("mae", 2.4)):
        log_run(client, exp, loss, {"trainer.loss": loss}, {"test_mae": mae, "test_rmse": mae * 1.4,
                                                             "test_loss": mae, "loss": 1.0})
    result = report.build(client, experiment="boston")
    assert result.metric == "test_mae"
    assert list(result.table["trainer.loss"]) == ["huber", "mae", "mse"]
    assert list(result.table["train_loss"]) == [1.0, 1.0, 1.0]  # no validation: the last epoch's value


def test_a_swept_group_shows_its_name_not_every_preset_specific_key(store):
    client = MlflowClient(store)
    exp = client.create_experiment("optimizers")
    presets = {"sgd": {"optimizer.momentum": 0.0, "optimizer.nesterov": False},
               "adam": {"optimizer.beta_1": 0.9, "optimizer.amsgrad": False}}
    for name, extra in presets.items():
        log_run(client, exp, name, {"optimizer.name": name, "optimizer.learning_rate": 0.01 if name == "sgd" else 0.001,
                                    **extra}, {"test_accuracy": 0.8})
    result = report.build(client, experiment="optimizers")
    assert result.swept == ["optimizer.name", "optimizer.learning_rate"]


def test_segmentation_runs_are_sorted_by_mean_iou_with_their_tasks_columns(store, tmp_path):
    """The headline comes from the runs' task: mean IoU, highest first, even where test loss disagrees."""
    client = MlflowClient(store)
    exp = client.create_experiment("unet_loss")
    for loss, iou, test_loss in (("dice", 0.80, 0.10), ("ce_dice", 0.91, 0.30), ("sparse_categorical_crossentropy",
                                                                                 0.85, 0.05)):
        log_run(client, exp, loss, {"trainer.loss": loss},
                {"test_mean_iou": iou, "test_loss": test_loss, "test_dice": iou + 0.03, "best_val_mean_iou": iou,
                 "best_mean_iou": iou + 0.02, "test_accuracy": 0.5}, tags={"task": "segmentation"})
    result = report.build(client, experiment="unet_loss", out=tmp_path / "rep")
    assert result.metric == "test_mean_iou"
    assert list(result.table["trainer.loss"]) == ["ce_dice", "sparse_categorical_crossentropy", "dice"]
    assert {"val_mean_iou", "train_mean_iou", "test_dice"} <= set(result.table)
    assert "test_accuracy" not in result.table  # not a segmentation column (a logged stray stays out)


def attach_model(client, run_id, name="model", status="READY"):
    """What RunLogger.model records for a run: a logged model named `name`, linked as the run's output."""
    from mlflow.entities import LoggedModelOutput

    model = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id)
    client.finalize_logged_model(model.model_id, status)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def test_register_makes_the_best_runs_model_a_new_registry_version(sweep):
    client, parent = sweep
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_run(parent).info.experiment_id])}
    models = {name: attach_model(client, runs[name]) for name in ("model.depth=2", "model.depth=5", "model.depth=3")}
    result = report.build(client, parent=parent)
    said = register.register_best(client, result, "digits-depth")
    assert "model.depth=5" in said and "'digits-depth' version 1" in said and "test_accuracy 0.9" in said
    (version,) = client.search_model_versions("name = 'digits-depth'")
    assert version.run_id == runs["model.depth=5"]  # the best test accuracy
    assert version.source == f"models:/{models['model.depth=5']}"
    again = register.register_best(client, report.build(client, parent=parent, sort="model.depth"), "digits-depth")
    assert "model.depth=2" in again and "version 2" in again  # the first row of the report's own sort


def test_register_takes_the_lowest_error_for_regression_and_skips_failed_or_other_models(store):
    client = MlflowClient(store)
    exp = client.create_experiment("boston")
    ids = {loss: log_run(client, exp, loss, {"trainer.loss": loss}, {"test_mae": mae, "test_loss": mae})
           for loss, mae in (("mse", 2.5), ("huber", 2.2))}
    good = attach_model(client, ids["huber"])
    attach_model(client, ids["huber"], status="FAILED")  # a save that failed half-way
    attach_model(client, ids["huber"], name="checkpoint")  # another model of the run, not nnlab's
    said = register.register_best(client, report.build(client, experiment="boston"), "boston")
    assert "'huber'" in said and "test_mae 2.2" in said
    assert client.get_model_version("boston", "1").source == f"models:/{good}"


def test_register_without_a_logged_model_says_so_in_one_sentence(sweep):
    client, parent = sweep
    with pytest.raises(NnlabError, match=r"^The best run of 'depth-sweep', run 'model.depth=5' \(\w+\), has no logged "
                                         r"MLflow model .*nothing was registered\.$"):
        register.register_best(client, report.build(client, parent=parent), "digits-depth")
    assert client.search_registered_models() == []


def test_nnlab_report_register_prints_the_version(sweep, tmp_path, capsys):
    from nnlab.reports.command import main as report_main

    client, parent = sweep
    run_id = client.search_runs([client.get_run(parent).info.experiment_id], "attributes.run_name = 'model.depth=5'")[0]
    attach_model(client, run_id.info.run_id)
    report_main(["--parent", parent, "--uri", client.tracking_uri, "--out", str(tmp_path / "rep"), "--register",
                 "best-depth"])
    assert "as 'best-depth' version 1 (models:/best-depth/1)" in capsys.readouterr().out


def test_the_tables_show_counts_as_integers_and_the_csv_keeps_raw_values(sweep, tmp_path):
    client, parent = sweep
    out = tmp_path / "rep"
    report.build(client, parent=parent, out=out)
    md, tex, page = (out / "table.md").read_text(), (out / "table.tex").read_text(), (out / "table.html").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    first = next(line for line in md.splitlines() if line.startswith("| model.depth=5"))
    cells = dict(zip(columns, (c.strip() for c in first.strip("|").split("|"))))
    assert (cells["params"], cells["best_epoch"], cells["epochs_run"], cells["test_accuracy"]) == ("5,000", "2", "3",
                                                                                                   "0.9")
    assert "5000.0" not in md + tex + page and " 2.0 " not in md
    assert "& 5000 &" in tex and "\\begin{tabular}{lrrrrrrrrrrrrl}" in tex  # numbers (and swept numbers) right
    assert '<td class="num">5,000</td>' in page
    raw = pd.read_csv(out / "table.csv")
    assert raw["params"].dtype == "int64" and list(raw["test_loss"]) == [1 - 0.9, 1 - 0.85, 1 - 0.8]  # not rounded


def test_table_html_is_a_styled_page_with_a_title_caption_and_scrolling_table(sweep, tmp_path):
    client, parent = sweep
    log_run(client, client.get_run(parent).info.experiment_id, "model.depth=7", {"model.depth": 7, "seed": 1},
            {"test_accuracy": 0.1}, tags={PARENT_TAG: parent, SWEEP_TAG: "s1", ROLE_TAG: "job"}, status="FAILED")
    page = (report.build(client, parent=parent, out=tmp_path / "rep", formats=["html"]).paths[0]).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Report: depth-sweep</title>" in page
    assert "<h1>Report: depth-sweep</h1>" in page and '<p class="caption">depth-sweep: 4 runs;' in page
    style = page.split("<style>")[1].split("</style>")[0]
    for rule in (".table-wrap { overflow-x: auto", "border: 1px solid", "thead th { background",
                 "tr:nth-child(even) td { background", "table.report .num { text-align: right; }"):
        assert rule in style, rule
    assert '<div class="table-wrap"><table class="report">' in page
    assert '<th class="num" title="test_accuracy">test_<wbr>accuracy</th>' in page  # a long header may wrap
    assert '<td class="fail">FAILED</td>' in page and "<td>FINISHED</td>" in page


def test_a_parent_run_logged_to_carries_the_best_job_its_metric_swept_values_and_a_description(sweep, caplog):
    client, parent = sweep
    report.build(client, parent=parent, sort="model.depth", log_to_parent=True)  # the best whatever the sort
    run = client.get_run(parent)
    best = next(r for r in client.search_runs([run.info.experiment_id], "attributes.run_name = 'model.depth=5'"))
    assert run.data.metrics["best_test_accuracy"] == pytest.approx(0.9)
    assert run.data.params == {"best_run_id": best.info.run_id, "best_run_name": "model.depth=5",
                               "best.model.depth": "5"}
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("best of 3: 5, test accuracy 90.0%\n\n| run ")
    assert [line.split("|")[1].strip() for line in note.splitlines() if line.startswith("| model.depth=")] == [
        "model.depth=5", "model.depth=3", "model.depth=2"]  # ranked by the headline metric

    better = log_run(client, run.info.experiment_id, "model.depth=8", {"model.depth": 8, "seed": 1},
                     {"test_accuracy": 0.95}, tags={PARENT_TAG: parent, SWEEP_TAG: "s1", ROLE_TAG: "job"})
    report.build(client, sweep="s1", log_to_parent=True)  # `nnlab report --sweep s1 --log` once it finished
    run = client.get_run(parent)
    assert run.data.metrics["best_test_accuracy"] == pytest.approx(0.95)
    assert run.data.tags["mlflow.note.content"].startswith("best of 4: 8, test accuracy 95.0%")
    assert run.data.params["best_run_id"] == best.info.run_id != better  # MLflow never changes a param…
    assert "keeps its params best_run_id, best_run_name, best.model.depth" in caplog.text  # …and says so


def test_the_best_of_several_swept_keys_names_each_and_regression_reads_as_an_error(store):
    from nnlab.reports.best import best_of

    client = MlflowClient(store)
    exp = client.create_experiment("boston")
    for loss, width, mae in (("mse", 8, 2.5), ("huber", 16, 2.2)):
        log_run(client, exp, f"{loss}-{width}", {"trainer.loss": loss, "model.width": width},
                {"test_mae": mae, "test_mae_original": mae * 9}, tags={"task": "regression"})
    result = report.build(client, experiment="boston")
    assert result.best.sentence() == ("best of 2: trainer.loss=huber, model.width=16, test MAE 2.2 (19.8 in the "
                                      "target's units)")
    runs = client.search_runs([exp])
    full, _, run_ids = report.ranked_table(runs, ["trainer.loss"])
    assert best_of(runs, full, "test_accuracy", run_ids, []) is None  # no run has it


def test_register_finds_a_model_named_after_the_runs_model(store):
    client = MlflowClient(store)
    exp = client.create_experiment("cnns")
    run_id = log_run(client, exp, "fashion_cnn_adam", {}, {"test_accuracy": 0.9}, tags={"model": "cnn"})
    model_id = attach_model(client, run_id, name="cnn")
    attach_model(client, run_id, name="mlp")  # not this run's model
    assert register.logged_model_id(client, client.get_run(run_id)) == model_id


@pytest.fixture
def search(store):
    """An Optuna search's parent and 3 trials: complete, pruned with the highest (partial) score, failed."""
    client = MlflowClient(store)
    exp = client.create_experiment("lr-search")
    parent = client.create_run(exp, run_name="lr-search", tags={
        SWEEP_TAG: "o1", ROLE_TAG: "sweep", "optuna.study": "lr-search", "optuna.storage": "journal:o1.log"})
    parent = parent.info.run_id
    for trial, lr, state, status, metrics in (
            (0, 0.01, "COMPLETE", "FINISHED", {"test_accuracy": 0.80, "epochs_run": 5}),
            (1, 0.1, "PRUNED", "FINISHED", {"test_accuracy": 0.95, "epochs_run": 2}),
            (2, 0.5, "FAIL", "FAILED", {})):
        tags = {PARENT_TAG: parent, SWEEP_TAG: "o1", ROLE_TAG: "job", "optuna.trial": str(trial),
                "optuna.state": state, **({"pruned": "epoch 2"} if state == "PRUNED" else {})}
        log_run(client, exp, f"trial-{trial}", {"trainer.lr": lr, "seed": 1}, metrics, tags=tags, status=status)
    return client, parent


def test_a_search_lists_every_trial_with_its_state_and_its_best_is_a_complete_one(search, tmp_path):
    client, parent = search
    result = report.build(client, parent=parent, out=tmp_path / "rep", log_to_parent=True)
    table = result.table
    assert list(table.columns[:4]) == ["run", "trial", "state", "trainer.lr"]
    assert list(table["run"]) == ["trial-1", "trial-0", "trial-2"]  # by test accuracy, as any report; failed last
    assert list(table["state"]) == ["pruned", "complete", "failed"]
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FAILED"]  # a failed trial is still a row
    assert result.best.run_name == "trial-0"  # the pruned trial's higher score is of 2 epochs only
    assert result.best.sentence() == "best of 1 (2 pruned or failed): 0.01, test accuracy 80.0%"
    assert client.get_run(parent).data.params["best_run_name"] == "trial-0"
    by_trial = report.build(client, parent=parent, sort="trial")
    assert list(by_trial.table["trial"]) == [0, 1, 2]
    assert "trial-1,1,pruned,0.1," in (tmp_path / "rep" / "table.csv").read_text()  # trial numbers as integers


def test_trials_that_tie_keep_trial_order(search):
    client, parent = search
    runs = sorted(client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'"),
                  key=lambda r: r.info.run_name, reverse=True)  # trial-2, trial-1, trial-0
    table, _, _ = report.ranked_table(runs, ["trainer.lr"], sort="status")  # FAILED, then two FINISHED
    assert list(table["trial"]) == [2, 0, 1]
