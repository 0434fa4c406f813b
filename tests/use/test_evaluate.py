"""`nnlab evaluate`: a finished run's model scored on its test set or another one, as a new run linked to it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_boston, make_split_tree
from mlflow.tracking import MlflowClient
from trained_runs import EXPERIMENT, copy_run, marker_plugin, run_listing_plugin, run_model, train_run

from nnlab.data.images import decode_one
from nnlab.errors import ConfigError, NnlabError
from nnlab.use import evaluate as evaluate_module
from nnlab.use.evaluate import evaluate


@pytest.fixture(scope="module")
def pets(runs_root) -> Path:
    tree = make_split_tree(runs_root / "pets", ["cat", "dog"], train=12, test=6)
    # the same test photos filed under the other class: a test set the model must score badly on
    for a, b in (("cat", "dog"), ("dog", "cat")):
        shutil.copytree(tree / "test" / a, tree / "swapped" / b)
    return tree


@pytest.fixture(scope="module")
def folder_run(runs_store, pets) -> str:
    return train_run(runs_store, "dataset=image_folder", f"dataset.path={pets}", "dataset.image_size=[12,12]",
                     "dataset.cache_dir=null", "model=cnn", "model.blocks=[{filters:4}]", "model.dense=[8]",
                     "trainer.epochs=3", "trainer.batch_size=8")


def runs_in(client: MlflowClient) -> int:
    return len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id]))


def test_without_overrides_a_linked_run_logs_the_source_runs_own_test_metrics(digits_run, runs_client):
    result = evaluate(digits_run, [], uri=runs_client.tracking_uri)
    run, source = runs_client.get_run(result.run_id), runs_client.get_run(digits_run)
    assert run.info.status == "FINISHED" and run.info.experiment_id == source.info.experiment_id
    assert run.data.tags["nnlab.evaluated_run"] == digits_run and run.data.tags["nnlab.role"] == "evaluation"
    assert run.data.params["dataset.name"] == "digits" and run.data.params["dataset.test_split"] == "0.2"
    tests = {k: v for k, v in source.data.metrics.items() if k.startswith("test_")}
    assert len(tests) > 30  # loss, accuracy, per-class precision/recall/F1, macro and weighted F1
    assert {k: pytest.approx(v, abs=1e-5) for k, v in tests.items()} == \
        {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    artifacts = {a.path for a in runs_client.list_artifacts(result.run_id)}
    assert {"confusion_matrix.png", "classification_report.json", "config.yaml"} <= artifacts
    assert "model" not in artifacts and "nnlab.class_names_differ" not in run.data.tags


def test_a_regression_run_evaluated_again_reproduces_its_test_errors(runs_store, runs_client, runs_root):
    make_boston(runs_root / "boston" / "housing.data", rows=120)
    run_id = train_run(runs_store, "dataset=boston", f"dataset.path={runs_root / 'boston'}", "model.widths=[8]",
                       "trainer.epochs=2")
    result = evaluate(run_id, [], uri=runs_client.tracking_uri)
    source = runs_client.get_run(run_id).data.metrics
    for key in ("test_loss", "test_mae", "test_rmse", "test_mae_train_mean"):
        assert result.metrics[key] == pytest.approx(source[key], rel=1e-5)
    assert "predictions.png" in {a.path for a in runs_client.list_artifacts(result.run_id)}


def test_a_segmentation_run_evaluated_again_reproduces_its_pixel_scores_with_its_own_loss(runs_store, runs_client):
    run_id = train_run(runs_store, "dataset=scenes", "dataset.count=40", "dataset.canvas_size=[16,16]",
                       "dataset.item_size=[6,8]", "dataset.items=[1,2]", "model=unet", "model.depth=2",
                       "model.filters=4", "trainer.epochs=1", "trainer.batch_size=8", "trainer.loss=ce_dice")
    result = evaluate(run_id, [], uri=runs_client.tracking_uri)
    source = runs_client.get_run(run_id).data.metrics
    for key in ("test_loss", "test_mean_iou", "test_dice", "test_pixel_accuracy", "test_iou_background"):
        assert result.metrics[key] == pytest.approx(source[key], rel=1e-5)
    assert {"masks.png", "iou_per_class.json"} <= {a.path for a in runs_client.list_artifacts(result.run_id)}


def test_another_test_folder_scores_the_model_on_that_folder(folder_run, runs_client, pets):
    result = evaluate(folder_run, ["dataset.test_dir=swapped"], uri=runs_client.tracking_uri)
    files = sorted((pets / "swapped" / "cat").glob("*.png")) + sorted((pets / "swapped" / "dog").glob("*.png"))
    labels = np.array([0] * 6 + [1] * 6)
    p = run_model(runs_client, folder_run).predict(np.stack([decode_one(f, (12, 12), "RGB", False) for f in files]),
                                              verbose=0)
    expected = float(np.mean((p[:, 0] > 0.5).astype(int) == labels))
    assert result.metrics["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    source = runs_client.get_run(folder_run).data.metrics["test_accuracy"]
    assert result.metrics["test_accuracy"] == pytest.approx(1 - source, abs=1e-6)  # the same photos, labels swapped
    run = runs_client.get_run(result.run_id)
    assert run.data.params["dataset.test_dir"] == "swapped" and run.data.tags["overrides"] == "dataset.test_dir=swapped"


def test_an_image_size_the_model_was_not_built_for_is_refused_before_any_run(folder_run, runs_client):
    before = runs_in(runs_client)
    with pytest.raises(NnlabError, match=r"takes inputs of shape \(12, 12, 3\), but dataset 'image_folder' gives "
                                         r"\(16, 16, 3\); a model built for one input size") as err:
        evaluate(folder_run, ["dataset.image_size=[16,16]"], uri=runs_client.tracking_uri)
    assert "\n" not in str(err.value) and runs_in(runs_client) == before


def test_a_dataset_with_another_class_count_is_refused_in_one_sentence(digits_run, runs_client, pets):
    with pytest.raises(NnlabError, match=r"predicts 10 classes \(0, 1, .*\), but dataset 'image_folder' has 2 "
                                         r"\(cat, dog\)"):
        evaluate(digits_run, ["dataset=image_folder", f"dataset.path={pets}", "dataset.image_size=[8,8]",
                              "dataset.color_mode=grayscale", "dataset.cache_dir=null"], uri=runs_client.tracking_uri)


def test_the_same_class_count_under_other_names_is_scored_by_index_and_tagged(digits_run, runs_client, runs_root):
    names = [f"c{k}" for k in range(10)]
    tree = make_split_tree(runs_root / "ten", names, train=2, test=2, size=(8, 8))
    result = evaluate(digits_run, ["dataset=image_folder", f"dataset.path={tree}", "dataset.image_size=[8,8]",
                                   "dataset.color_mode=grayscale", "dataset.cache_dir=null", "dataset.val_split=0"],
                      uri=runs_client.tracking_uri)
    tag = runs_client.get_run(result.run_id).data.tags["nnlab.class_names_differ"]
    assert tag.startswith("model: 0, 1, 2") and "data: c0, c1" in tag and result.warnings == [tag]
    files = [f for k in names for f in sorted((tree / "test" / k).glob("*.png"))]
    pixels = np.stack([decode_one(f, (8, 8), "L", False) for f in files]).astype(np.float32) / 255  # [0, 1], as digits
    p = run_model(runs_client, digits_run).predict(pixels, verbose=0)
    labels = np.repeat(np.arange(10), 2)
    assert result.metrics["test_accuracy"] == pytest.approx(np.mean(p.argmax(1) == labels), abs=1e-6)
    cross_entropy = -np.mean(np.log(p[np.arange(20), labels]))
    assert result.metrics["test_loss"] == pytest.approx(cross_entropy, rel=1e-4)


def test_an_override_of_the_model_is_refused_in_one_sentence(digits_run, runs_client):
    with pytest.raises(ConfigError, match="evaluate takes dataset=NAME.*'model.width' would change the trained model"):
        evaluate(digits_run, ["model.width=3"], uri=runs_client.tracking_uri)


def test_an_unknown_dataset_preset_gets_the_closest_name(digits_run, runs_client):
    with pytest.raises(ConfigError, match="Unknown dataset 'mnsit'.*did you mean 'mnist'"):
        evaluate(digits_run, ["dataset=mnsit"], uri=runs_client.tracking_uri)


def test_an_unknown_dataset_key_is_refused_in_one_sentence(digits_run, runs_client):
    with pytest.raises(ConfigError, match="dataset.test_splt=0.5 do not fit the dataset config") as err:
        evaluate(digits_run, ["dataset.test_splt=0.5"], uri=runs_client.tracking_uri)
    assert "\n" not in str(err.value)


def test_an_unknown_run_and_a_run_without_a_model_are_one_sentence_each(digits_run, runs_client):
    with pytest.raises(NnlabError, match="No run 'nope' in this store"):
        evaluate("nope", [], uri=runs_client.tracking_uri)
    bare = copy_run(runs_client, digits_run, EXPERIMENT, ["config.yaml"], {"task": "classification"})
    with pytest.raises(NnlabError, match=f"Run {bare} has no model/model.keras"):
        evaluate(bare, [], uri=runs_client.tracking_uri)


def test_the_command_line_passes_overrides_and_the_store(digits_run, runs_client, capsys):
    evaluate_module.main([digits_run, "dataset.test_split=0.3", "--uri", runs_client.tracking_uri])
    out = capsys.readouterr().out
    assert "evaluation run" in out and f"of run {digits_run} FINISHED in experiment '{EXPERIMENT}'" in out
    new_id = out.split("evaluation run ")[1].split()[0]
    assert runs_client.get_run(new_id).data.params["dataset.test_split"] == "0.3"


def test_evaluate_refuses_a_plugin_named_only_in_the_stored_config_without_importing_it_or_logging(
        digits_run, runs_client, tmp_path):
    plugin, marker = marker_plugin(tmp_path, "planted_evaluate")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    before = runs_in(runs_client)
    with pytest.raises(NnlabError, match=f"lists plugin {plugin}, .* pass --plugins {plugin} .* or --trust-plugins"):
        evaluate_module.main([run, "--uri", runs_client.tracking_uri])
    assert not marker.exists() and runs_in(runs_client) == before


def test_evaluate_runs_with_the_plugin_passed_or_trusted_importing_it_then(digits_run, runs_client, tmp_path, capsys):
    plugin, marker = marker_plugin(tmp_path, "passed_evaluate")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    evaluate_module.main([run, "--uri", runs_client.tracking_uri, "--plugins", str(plugin)])
    assert marker.read_text() == "imported\n"
    assert f"of run {run} FINISHED" in capsys.readouterr().out
    plugin, marker = marker_plugin(tmp_path, "trusted_evaluate")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    result = evaluate(run, [], uri=runs_client.tracking_uri, trust_plugins=True)
    assert marker.read_text() == "imported\n" and "test_accuracy" in result.metrics
