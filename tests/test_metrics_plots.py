import numpy as np

from nnlab import plots
from nnlab.metrics import class_report, metric_safe


def test_class_report_per_class_metrics_and_confusion():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    report = class_report(y_true, probs, ["T-shirt/top", "Trouser", "Bag"])
    assert report.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    metrics = report.metrics()
    assert metrics["test_recall_T-shirt_top"] == 0.5
    assert metrics["test_precision_Trouser"] == 2 / 3
    assert metrics["test_recall_Bag"] == 0.5
    assert "T-shirt/top" in report.text
    assert {"test_f1_macro", "test_f1_weighted"} <= set(metrics)


def test_metric_safe_names():
    assert metric_safe("Ankle boot") == "Ankle_boot"
    assert metric_safe("T-shirt/top") == "T-shirt_top"


def test_figures_have_one_panel_per_quantity():
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7],
               "lr": [0.1, 0.1]}
    fig = plots.learning_curves(history, best_epoch=2, title="t")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss: train vs validation", "accuracy: train vs validation"]
    assert len(fig.axes[0].lines) == 3  # train, validation, best-epoch marker
    plots.close(fig)
    fig = plots.confusion_figure([0, 1], [0, 0], [0, 1], ["a", "b"])
    assert fig.axes[0].get_xlabel() == "Predicted label"
    plots.close(fig)


def test_binary_probabilities_are_thresholded_at_one_half():
    report = class_report(np.array([0, 1, 1, 0]), np.array([[0.2], [0.7], [0.4], [0.51]]), ["no", "yes"])
    assert report.y_pred.tolist() == [0, 1, 0, 1]
    assert report.confusion.tolist() == [[1, 1], [1, 1]]


def test_stage_starts_are_drawn_on_every_panel():
    history = {"loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.1, 0.9, 0.7, 0.6]}
    fig = plots.learning_curves(history, title="t", stage_starts=[2, 4])
    lines = fig.axes[0].get_lines()
    stage_lines = [line for line in lines if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in stage_lines] == [1.5, 3.5]
    assert [t.get_text() for t in fig.axes[0].texts] == ["stage 2", "stage 3"]
    plots.close(fig)


def test_architecture_diagram_or_the_reason_it_was_skipped(tmp_path, monkeypatch):
    import shutil

    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
    if shutil.which("dot"):
        assert plots.architecture(model, tmp_path / "a.png") is None
        assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "Graphviz" in plots.architecture(model, tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()
