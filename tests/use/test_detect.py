"""The detection lab end to end on a tiny run trained in this process: what MLflow stored, `nnlab detect` on a run
and on a KerasHub preset folder nnlab saved (no download), `nnlab predict`, and the MLflow pyfunc round trip."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from trained_runs import marker_plugin, run_listing_plugin, train_run

pytest.importorskip("keras_hub")
pytest.importorskip("pycocotools")

TINY = ("dataset=scenes", "dataset.target=boxes", "dataset.count=40", "dataset.canvas_size=[64,64]",
        "dataset.items=[1,3]", "model=retinanet", "model.filters=[64,16,16,16]", "trainer.epochs=2",
        "trainer.batch_size=8")


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    store = f"sqlite:///{tmp_path_factory.mktemp('detect') / 'mlflow.db'}"
    return store, train_run(store, *TINY, experiment="detect")


def test_a_detection_job_logs_map_per_epoch_ap_per_class_boxes_and_its_model(detection_run):
    store, run_id = detection_run
    client = MlflowClient(store)
    run = client.get_run(run_id)
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "detection"
    assert {"test_map50", "test_map", "test_loss", "best_val_map50"} <= set(m)
    assert 0.0 <= m["test_map50"] <= 1.0 and m["test_map"] <= m["test_map50"]
    assert len(client.get_metric_history(run_id, "val_map50")) == 2  # mAP after every epoch
    paths = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"ap_per_class.md", "ap_per_class.json", "detections.png", "curves.png", "model/model.keras"} <= paths
    assert "retinanet/MLmodel" in {a.path for a in client.list_artifacts(run_id, "retinanet")}  # the MLflow Model
    assert run.data.tags["mlflow.note.content"].startswith("retinanet on scenes: test mAP@0.5")


def test_nnlab_detect_paints_a_held_out_scene_and_scores_the_boxes_it_finds(detection_run, tmp_path, capsys):
    from nnlab.use.detect import main

    store, run_id = detection_run
    main([run_id, "--scene", "6", "--size", "96", "96", "--uri", store, "--out", str(tmp_path), "--top", "5",
          "--min-score", "0"])
    result = json.loads((tmp_path / "detections.json").read_text())
    assert result["present"] == len(json.loads((tmp_path / "scene.json").read_text())) > 0
    assert len(result["detections"]) == 5 and 0 <= result["found"] <= 5 and result["size"] == [96, 96]
    assert {"scene.png", "detections.png", "detections.csv"} <= {p.name for p in tmp_path.iterdir()}
    assert "true objects" in capsys.readouterr().out


def test_nnlab_detect_imports_a_plugin_the_stored_config_lists_only_when_passed(detection_run, tmp_path):
    from nnlab.errors import NnlabError
    from nnlab.use.detect import main

    store, run_id = detection_run
    plugin, marker = marker_plugin(tmp_path, "planted_detect")
    run = run_listing_plugin(MlflowClient(store), run_id, plugin, experiment="detect")
    args = [run, "--scene", "2", "--size", "64", "64", "--uri", store, "--out", str(tmp_path / "out")]
    with pytest.raises(NnlabError, match=f"lists plugin {plugin}, .* pass --plugins {plugin} .* or --trust-plugins"):
        main(args)
    assert not marker.exists() and not (tmp_path / "out" / "detections.json").exists()
    main([*args, "--plugins", str(plugin)])
    assert marker.read_text() == "imported\n" and (tmp_path / "out" / "detections.json").exists()


def test_nnlab_predict_counts_objects_per_picture_at_the_training_size(detection_run, tmp_path):
    from PIL import Image

    from nnlab.use.predict import predict

    store, run_id = detection_run
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(tmp_path / "photo.jpg")
    frame = predict(run_id, [tmp_path / "photo.jpg"], out=tmp_path / "out", uri=store)
    assert list(frame.columns[:2]) == ["input", "objects"] and frame["objects"].iloc[0] >= 0
    assert (tmp_path / "out" / "predictions.png").exists()


def test_nnlab_evaluate_scores_the_detector_on_more_crowded_scenes_as_a_linked_run(detection_run):
    from nnlab.use.evaluate import EVALUATED_TAG, evaluate

    store, run_id = detection_run
    result = evaluate(run_id, ["dataset.items=[3,5]"], uri=store)
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.tags[EVALUATED_TAG] == run_id and run.data.tags["task"] == "detection"
    assert 0.0 <= run.data.metrics["test_map50"] <= 1.0 and "test_loss" in run.data.metrics


def test_the_mlflow_model_predicts_boxes_through_pyfunc_once_keras_hub_is_imported(detection_run):
    import keras_hub  # noqa: F401  (registers the detector's classes for loading)
    import mlflow

    store, run_id = detection_run
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/retinanet")  # named after the run's model
    out = model.predict(np.zeros((2, 64, 64, 3), np.uint8))  # the signature: raw pixels, as logged
    found = out.item() if isinstance(out, np.ndarray) and out.dtype == object else out  # MLflow may wrap the dict
    assert np.asarray(found["boxes"]).shape[:2] == (2, 100) and np.asarray(found["num_detections"]).shape == (2,)


def test_a_keras_hub_preset_folder_that_nnlab_saved_detects_offline(tmp_path):
    from PIL import Image

    from nnlab.models.retinanet import retinanet
    from nnlab.use.detect import detect

    model = retinanet(input_shape=(64, 64, 3), num_classes=3, encoder=None, filters=[64, 16, 16, 16],
                      blocks=[1, 1, 1, 1], min_level=3, max_level=5, anchor_size=2.0, head_convs=1, head_norm=True,
                      max_detections=100, min_score=0.05, iou_threshold=0.5, weights=None)
    model.save_to_preset(str(tmp_path / "preset"))
    (tmp_path / "preset" / "class_names.json").write_text(json.dumps(["cat", "dog", "bird"]))
    Image.fromarray(np.full((70, 90, 3), 200, np.uint8)).save(tmp_path / "pic.png")
    result = detect(str(tmp_path / "preset"), tmp_path / "pic.png", top=3, min_score=0.0, out=tmp_path / "out")
    assert result["size"] == [64, 64] and len(result["detections"]) == 3
    assert {row["class"] for row in result["detections"]} <= {"cat", "dog", "bird"}
