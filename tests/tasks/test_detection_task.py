"""The detection task's own parts without training: targets, pycocotools mAP, box matching, refusals."""

import numpy as np
import pytest

from nnlab.config.data import AugmentConfig
from nnlab.errors import NnlabError
from nnlab.tasks import get_task, higher_is_better
from nnlab.tasks.detection import box_targets, coco_map, detections
from nnlab.use.detect import fitted_size, matched

TRUTH = np.array([[[10, 10, 30, 30, 0], [40, 40, 60, 70, 1], [-1, -1, -1, -1, -1]],
                  [[5, 5, 25, 25, 1], [-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]]], np.float32)


def as_predictions(rows_per_image: list[list[list[float]]]) -> dict:
    """Decoded-detector output from per-image [x0, y0, x1, y1, class, score] rows, padded like KerasHub's."""
    n, width = len(rows_per_image), max(len(r) for r in rows_per_image)
    out = {"boxes": np.zeros((n, width, 4), np.float32), "confidence": np.full((n, width), -1, np.float32),
           "labels": np.full((n, width), -1, np.int32), "num_detections": np.zeros(n, np.int32)}
    for i, rows in enumerate(rows_per_image):
        for j, (*box, label, score) in enumerate(rows):
            out["boxes"][i, j], out["labels"][i, j], out["confidence"][i, j] = box, label, score
        out["num_detections"][i] = len(rows)
    return out


def test_padded_box_rows_become_keras_hubs_boxes_and_labels_with_one_more_padding_row():
    targets = box_targets(TRUTH)
    assert targets["boxes"].shape == (2, 4, 4) and targets["labels"].dtype == np.int32
    assert targets["labels"].tolist() == [[0, 1, -1, -1], [1, -1, -1, -1]]


def test_perfect_detections_score_map_one_and_a_wrong_class_scores_zero():
    perfect = as_predictions([[[10, 10, 30, 30, 0, 0.9], [40, 40, 60, 70, 1, 0.8]], [[5, 5, 25, 25, 1, 0.7]]])
    stats = coco_map(TRUTH, perfect, 2, per_class=True)
    assert stats["map50"] == pytest.approx(1.0) and stats["map"] == pytest.approx(1.0)
    assert stats["ap50"] == [1.0, 1.0] and stats["support"].tolist() == [1, 2]
    swapped = as_predictions([[[10, 10, 30, 30, 1, 0.9], [40, 40, 60, 70, 0, 0.8]], [[5, 5, 25, 25, 0, 0.7]]])
    assert coco_map(TRUTH, swapped, 2)["map50"] == pytest.approx(0.0)


def test_a_box_shifted_by_half_its_size_misses_at_iou_half_so_map_drops():
    shifted = as_predictions([[[20, 10, 40, 30, 0, 0.9], [40, 40, 60, 70, 1, 0.8]], [[5, 5, 25, 25, 1, 0.7]]])
    stats = coco_map(TRUTH, shifted, 2, per_class=True)
    assert stats["ap50"][0] == pytest.approx(0.0) and stats["ap50"][1] == pytest.approx(1.0)
    assert stats["map50"] == pytest.approx(0.5)


def test_detections_keep_the_images_rows_at_or_above_the_score():
    predictions = as_predictions([[[0, 0, 5, 5, 0, 0.9], [1, 1, 6, 6, 1, 0.2]], [[2, 2, 4, 4, 1, 0.6]]])
    boxes, scores, labels = detections(predictions, 0, min_score=0.5)
    assert boxes.tolist() == [[0, 0, 5, 5]] and labels.tolist() == [0] and scores.tolist() == pytest.approx([0.9])


def test_matching_counts_each_true_box_once_and_needs_the_same_class():
    truth = np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 1]], np.float32)
    found = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert matched(found, np.array([0, 0, 0]), truth).tolist() == [True, False, False]
    assert matched(found, np.array([0, 0, 1]), truth).tolist() == [True, False, True]


def test_a_picture_is_fitted_to_multiples_of_32_capped_by_its_longer_side():
    assert fitted_size(640, 480, None, 1024) == (480, 640)
    assert fitted_size(4000, 3000, None, 1000) == (736, 992)
    assert fitted_size(100, 20, [64, 96], 1024) == (64, 96)


def test_map_counts_as_a_score_and_mape_as_an_error():
    assert higher_is_better("test_map50") and higher_is_better("val_map") and not higher_is_better("test_mape")
    assert get_task("detection").describe({"test_map50": 0.8312}) == "test mAP@0.5 83.1%"


def test_detection_refuses_augmentation_that_would_not_move_the_boxes_and_other_losses():
    task = get_task("detection")
    with pytest.raises(NnlabError, match="do not move the boxes"):
        task.augmentation(AugmentConfig(flip="horizontal"), seed=0)
    with pytest.raises(NnlabError, match="focal"):
        task.compile_args("mse", None, None, 2)
    with pytest.raises(NnlabError, match="remove trainer.metrics"):
        task.compile_args(None, None, ["accuracy"], 2)
    with pytest.raises(NnlabError, match="alpha"):
        task.compile_args("focal", {"delta": 1.0}, None, 2)


def test_decoding_the_libraries_own_encoding_of_the_truth_finds_every_box_with_map_one():
    """KerasHub's label encoder (with every true box matched to its best anchor) and its decoder are inverses on
    nnlab's scenes: a perfect head would score mAP 1.0, so no object is unlearnable."""
    pytest.importorskip("keras_hub")
    import keras

    from nnlab.data import load_dataset
    from nnlab.models.retinanet import retinanet

    data = load_dataset({"name": "scenes", "target": "boxes", "canvas_size": [128, 128], "items": [1, 12],
                         "count": 20}, seed=0)
    x, y = data.test
    y = y[:, : int((y[..., 4] >= 0).sum(1).max())]  # the fullest image has no padding row: the matcher's edge case
    model = retinanet(input_shape=(128, 128, 3), num_classes=10, encoder=None, filters=[64, 16, 16, 16],
                      blocks=[1, 1, 1, 1], min_level=3, max_level=5, anchor_size=2.0, head_convs=1, head_norm=True,
                      max_detections=100, min_score=0.05, iou_threshold=0.5, weights=None)
    targets = box_targets(y)
    images = keras.ops.convert_to_tensor(x.astype("float32"))
    deltas, labels = (np.asarray(t) for t in model.label_encoder(images=images, gt_boxes=targets["boxes"],
                                                                  gt_classes=targets["labels"]))
    logits = np.where(labels[..., None] == np.arange(10), 8.0, -8.0).astype("float32")
    found = model.decode_predictions({"bbox_regression": deltas, "cls_logits": logits}, images)
    stats = coco_map(y, {k: np.asarray(v) for k, v in found.items()}, 10)
    assert stats["map50"] == pytest.approx(1.0) and stats["map"] == pytest.approx(1.0)


def test_a_detector_trained_in_bfloat16_decodes_and_serves_in_float32_with_the_same_weights():
    """KerasHub's decoding mixes bfloat16 head outputs with float32 anchors and fails; the task's predict casts
    them, and the serving copy (what MLflow logs and `model.predict` decodes with) computes in float32."""
    pytest.importorskip("keras_hub")
    import keras

    from nnlab.models import build_model
    from nnlab.tasks.detection import float32_copy

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_model({"name": "retinanet", "filters": [64, 16, 16, 16], "min_score": 0.0}, (64, 64, 3),
                            "detection", 3)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    found = get_task("detection").predict(mixed, images, batch_size=2)
    assert found["boxes"].dtype == np.float32 and found["num_detections"].min() > 0
    serving = get_task("detection").serving_model(mixed)
    assert serving is not mixed and "mixed_bfloat16" not in repr(serving.get_config())
    assert all(np.array_equal(a, b) for a, b in zip(serving.get_weights(), mixed.get_weights()))
    served = serving.predict(images, verbose=0)  # KerasHub's predict decodes: this failed on the mixed model
    assert served["boxes"].dtype == np.float32 and served["num_detections"].min() > 0
    for key, value in serving(images).items():  # the same network, up to bfloat16's rounding
        rounded = keras.ops.convert_to_numpy(keras.ops.cast(mixed(images)[key], "float32"))
        assert np.abs(keras.ops.convert_to_numpy(value) - rounded).max() <= 0.05 * np.abs(rounded).max()
    plain = build_model({"name": "retinanet", "filters": [64, 16, 16, 16]}, (64, 64, 3), "detection", 3)
    assert float32_copy(plain) is plain
