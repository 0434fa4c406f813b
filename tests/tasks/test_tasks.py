"""Tasks as objects: registered by name, each owning its head, losses, metrics and report metadata; nothing
outside nnlab/tasks branches on a task's name."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from nnlab.errors import NnlabError
from nnlab.tasks import TASKS, get_task, higher_is_better

SRC = Path(__file__).resolve().parents[2] / "src" / "nnlab"


def test_the_three_tasks_are_registered_and_unknown_names_get_the_closest():
    assert {"classification", "regression", "segmentation"} <= set(TASKS.names())
    with pytest.raises(NnlabError, match="did you mean 'segmentation'"):
        get_task("segmentaton")


def test_no_module_outside_the_tasks_branches_on_a_task_name():
    """A comparison with a task name (task == "regression", data.task != "classification", …) belongs in the
    task's own module; loaders may only name the task they serve."""
    names = "|".join(TASKS.names())
    branch = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = [f"{path.relative_to(SRC)}:{i}: {line.strip()}"
             for path in SRC.rglob("*.py") if "tasks" not in path.parts
             for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


@pytest.mark.parametrize("task, classes, shape, units", [("classification", 10, (6,), 10),
                                                         ("classification", 2, (6,), 1),
                                                         ("regression", 0, (6,), 1),
                                                         ("segmentation", 3, (8, 8, 4), 3)])
def test_each_task_builds_its_own_head(task, classes, shape, units):
    inputs = keras.Input(shape)
    out = get_task(task).head(inputs, classes)
    assert out.shape[-1] == units == get_task(task).head_units(classes)
    assert out.shape[1:-1] == shape[:-1]  # a segmentation head keeps the pixels


def test_a_segmentation_head_on_flat_features_is_refused_in_one_sentence():
    with pytest.raises(NnlabError, match="feature map .* model=unet"):
        get_task("segmentation").head(keras.Input((16,)), 3)


@pytest.mark.parametrize("task, name", [("regression", "hubber"), ("classification", "mse_wrong"),
                                        ("segmentation", "dcie")])
def test_a_loss_the_task_does_not_accept_is_refused_with_its_names(task, name):
    with pytest.raises(NnlabError, match=f"Unknown trainer.loss for {task} '{name}'"):
        get_task(task).loss(name, None, 3)


def test_loss_aliases_and_options_reach_keras():
    assert get_task("regression").loss("mae", None, 0) == "mean_absolute_error"
    huber = get_task("regression").loss("huber", {"delta": 0.5}, 0)
    assert huber._fn_kwargs == {"delta": 0.5}
    with pytest.raises(NnlabError, match="loss_options .* do not fit loss 'huber'"):
        get_task("regression").loss("huber", {"width": 2}, 0)
    with pytest.raises(NnlabError, match="did you mean 'rmse'"):
        get_task("regression").metric("rmsee", 0)


def test_defaults_follow_the_head():
    assert get_task("classification").loss(None, None, 10) == "sparse_categorical_crossentropy"
    assert get_task("classification").loss(None, None, 2) == "binary_crossentropy"
    assert get_task("regression").loss(None, None, 0) == "mean_squared_error"
    assert [m.name for m in get_task("segmentation").metrics(None, 3)] == ["pixel_accuracy", "mean_iou", "dice"]


@pytest.mark.parametrize("task, logged, expected", [
    ("classification", {"best_val_accuracy": 0.9, "test_accuracy": 0.8}, 0.9),
    ("classification", {"test_accuracy": 0.8}, 0.8),  # no validation split
    ("regression", {"best_val_loss": 3.0, "test_loss": 4.0}, 3.0),
    ("segmentation", {"best_val_mean_iou": 0.7, "test_mean_iou": 0.6, "best_val_loss": 0.1}, 0.7),
])
def test_the_sweeper_objective_is_the_tasks_validation_metric_at_the_best_epoch(task, logged, expected):
    assert get_task(task).objective_value(logged) == expected


def test_metric_direction_by_name():
    assert all(higher_is_better(m) for m in ("val_accuracy", "test_mean_iou", "dice", "test_f1_macro"))
    assert not any(higher_is_better(m) for m in ("val_loss", "test_mae", "rmse", "training_seconds"))


def test_regression_logs_a_predicted_vs_true_figure_in_original_units():
    from nnlab.data import Data

    class Sink:
        figures: dict = {}

        def figure(self, fig, path):
            self.figures[path] = fig.axes[0].collections[0].get_offsets().data.copy()

    y = np.array([1.0, 2.0, 3.0], np.float32)
    data = Data((y[:, None], y), None, (y[:, None], y), "regression", target_scale=(10.0, 2.0))
    sink = Sink()
    get_task("regression").log_results(sink, data, np.array([[1.5], [2.0], [2.5]]), "t")
    assert np.allclose(sink.figures["predictions.png"], [[12, 13], [14, 14], [16, 15]])
