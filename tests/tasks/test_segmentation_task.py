"""The segmentation task: IoU and Dice agree between Keras's running metrics and the test evaluation, the Dice
losses behave, joint augmentation moves image and mask together, and the report files are written."""

import keras
import numpy as np
import pytest

from nnlab.config.data import AugmentConfig
from nnlab.data import Data
from nnlab.errors import NnlabError
from nnlab.tasks import get_task
from nnlab.tasks.losses import Dice
from nnlab.tasks.segmentation import JointTransform, pixel_scores

SEG = get_task("segmentation")


def one_hot(mask, classes):
    return np.eye(classes, dtype="float32")[mask]


def test_pixel_scores_match_a_hand_count():
    truth = np.array([[[0, 0], [1, 2]]])
    pred = one_hot(np.array([[[0, 1], [1, 1]]]), 3)
    scores = pixel_scores(truth, pred, 3)
    # class 0: tp 1, fn 1 -> IoU 1/2; class 1: tp 1, fp 2 -> 1/3; class 2: fn 1 -> 0
    assert scores["iou"] == pytest.approx([0.5, 1 / 3, 0.0])
    assert scores["mean_iou"] == pytest.approx((0.5 + 1 / 3) / 3)
    assert scores["dice_per_class"] == pytest.approx([2 / 3, 0.5, 0.0])
    assert scores["pixel_accuracy"] == pytest.approx(0.5)


def test_a_class_absent_from_truth_and_prediction_does_not_count_in_the_mean():
    scores = pixel_scores(np.zeros((1, 2, 2), int), one_hot(np.zeros((1, 2, 2), int), 3), 3)
    assert scores["mean_iou"] == 1.0 and np.isnan(scores["iou"][1])


def test_the_keras_metrics_agree_with_the_test_evaluation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (3, 6, 6))
    probabilities = rng.random((3, 6, 6, 4)).astype("float32")
    expected = pixel_scores(truth, probabilities, 4)
    for metric, key in zip(SEG.metrics(None, 4), ("pixel_accuracy", "mean_iou", "dice")):
        metric.update_state(truth, probabilities)
        assert float(metric.result()) == pytest.approx(expected[key], rel=1e-5), key


def test_dice_loss_is_zero_when_perfect_and_grows_with_errors():
    truth = np.array([[[0, 1], [2, 1]]])
    dice = Dice(3)
    perfect = float(dice(truth, one_hot(truth, 3)))
    wrong = float(dice(truth, one_hot(np.array([[[1, 0], [0, 2]]]), 3)))
    assert perfect == pytest.approx(0.0, abs=1e-6) and wrong > 0.7  # no overlap: 1 - smoothing terms only
    both = Dice(3, cross_entropy=True)
    soft = np.full((1, 2, 2, 3), 1 / 3, "float32")
    assert float(both(truth, soft)) == pytest.approx(float(dice(truth, soft)) + np.log(3), rel=1e-4)


def test_losses_by_name_and_a_model_compiled_with_dice_reloads(tmp_path):
    assert isinstance(SEG.loss("ce_dice", None, 3), Dice) and SEG.loss("ce_dice", None, 3).cross_entropy
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, SEG.head(inputs, 3))
    model.compile("adam", loss=SEG.loss("dice", None, 3), metrics=SEG.metrics(None, 3))
    model.fit(np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4), "uint8"), verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert again.loss.num_classes == 3


def test_joint_transform_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (6, 10, 12)).astype("uint8")
    x = np.stack([y * 50, y * 50 + 1, 255 - y * 50], -1).astype("uint8")  # every pixel encodes its class
    moved_x, moved_y = JointTransform("horizontal_and_vertical", 0.3, "reflect")(x, y, np.random.default_rng(1))
    assert not np.array_equal(moved_y, y)  # something moved
    assert np.array_equal(moved_x[..., 0], moved_y * 50)
    again = JointTransform("horizontal_and_vertical", 0.3, "reflect")(x, y, np.random.default_rng(1))
    assert np.array_equal(again[1], moved_y)  # the same generator, the same draw


def test_geometric_augmentation_moves_to_the_pipeline_and_rotation_is_refused():
    image_only, transform = SEG.augmentation(AugmentConfig(flip="horizontal", shift=0.1, contrast=0.2), seed=0)
    assert image_only.flip is None and image_only.shift == 0.0 and image_only.contrast == 0.2
    assert isinstance(transform, JointTransform)
    assert SEG.augmentation(AugmentConfig(contrast=0.1), seed=0)[1] is None
    with pytest.raises(NnlabError, match="rotation and augment.zoom are not applied to masks"):
        SEG.augmentation(AugmentConfig(rotation=0.1), seed=0)
    assert get_task("classification").augmentation(AugmentConfig(flip="horizontal"), 0)[1] is None


def test_the_report_files_and_per_class_iou():
    class Sink:
        def __init__(self):
            self.texts, self.figures = {}, []

        def text(self, text, path):
            self.texts[path] = text

        def figure(self, fig, path):
            self.figures.append((path, len(fig.axes)))

    truth = np.zeros((3, 4, 4), "uint8")
    truth[:, :2] = 1
    x = np.zeros((3, 4, 4, 3), "uint8")
    data = Data((x, truth), None, (x, truth), "segmentation", ["background", "thing"])
    predictions = one_hot(truth, 2)
    metrics = SEG.evaluate(None, data, predictions, 8)
    assert metrics == {"test_pixel_accuracy": 1.0, "test_mean_iou": 1.0, "test_dice": 1.0,
                       "test_iou_background": 1.0, "test_iou_thing": 1.0}
    sink = Sink()
    SEG.log_results(sink, data, predictions, "unet on toy")
    assert sink.figures == [("masks.png", 3 * 3)]  # 3 test images x (image, true, predicted)
    assert "| thing | 1.0000 | 1.0000 | 24 |" in sink.texts["iou_per_class.md"]
    assert '"class": "background"' in sink.texts["iou_per_class.json"]
