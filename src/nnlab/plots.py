"""Figures for the lab report: learning curves, the confusion matrix, and sweep comparisons."""

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on headless machines

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def curve_names(history: Mapping[str, Sequence[float]]) -> list[str]:
    """Training quantities that have a curve: loss first, then the metrics; val_* are drawn beside them."""
    names = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "lr")]
    return sorted(names, key=lambda k: (k != "loss", k))


def learning_curves(history: Mapping[str, Sequence[float]], best_epoch: int | None = None,
                    title: str = "", stage_starts: Sequence[int] = ()) -> Figure:
    """One panel per quantity, train beside validation; the best epoch and the starts of training stages
    (gradual unfreezing) as vertical lines."""
    names = curve_names(history)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", ms=3, label=f"train {name}")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", ms=3, label=f"validation {name}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})")
        for i, start in enumerate(stage_starts, start=2):
            ax.axvline(start - 0.5, color="tab:red", ls=":", lw=1.2, label="stage start" if i == 2 else None)
            ax.annotate(f"stage {i}", (start - 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                        color="tab:red", ha="left", va="top")
        ax.set(xlabel="epoch", ylabel=name, title=f"{name}: train vs validation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_figure(y_true, y_pred, labels: list[int], class_names: list[str], title: str = "") -> Figure:
    size = max(5.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, display_labels=class_names, ax=ax, colorbar=False,
        xticks_rotation=45, cmap="Blues",
    )
    ax.set_title(title or "Confusion matrix (test set)")
    fig.tight_layout()
    return fig


def predicted_vs_true(truth, guess, title: str = "") -> Figure:
    """A regressor's test predictions against the truth, with the diagonal a perfect model would sit on."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(truth, guess, s=10, alpha=0.5)
    low, high = min(truth.min(), guess.min()), max(truth.max(), guess.max())
    ax.plot([low, high], [low, high], color="grey", ls="--", lw=1, label="perfect")
    ax.set(xlabel="true", ylabel="predicted", title=title or "Predicted vs true (test set)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def mask_grid(images, true_masks, predicted_masks, class_names: Sequence[str], title: str = "") -> Figure:
    """One row per image: the image, its true mask, the predicted mask, in one colour per class."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10").colors[: len(class_names)]
    cmap = ListedColormap(colours)
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False)
    for row, (image, true, pred) in zip(axes, zip(images, true_masks, predicted_masks)):
        row[0].imshow(np.squeeze(image), cmap="gray" if image.shape[-1] == 1 else None)
        for ax, mask in zip(row[1:], (true, pred)):
            ax.imshow(np.squeeze(mask), cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
        for ax, name in zip(row, ("image", "true mask", "predicted")):
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, class_names)], loc="lower center",
               ncol=min(len(class_names), 6), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def draw_boxes(ax, image, boxes, labels, class_names: Sequence[str], scores=None, truth=None) -> None:
    """An image with its boxes ([x_min, y_min, x_max, y_max] pixels), one colour per class, labelled with the
    class (and score); `truth` boxes, if given, as thin white outlines under them."""
    import numpy as np
    from matplotlib.patches import Rectangle

    colours = plt.get_cmap("tab10").colors
    ax.imshow(np.squeeze(image), cmap="gray" if image.shape[-1] == 1 else None)
    for x0, y0, x1, y1 in [] if truth is None else truth:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", lw=0.8, ls="--"))
    height, width = image.shape[:2]
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height])  # on the image
    for i, ((x0, y0, x1, y1), k) in enumerate(zip(boxes, labels)):
        colour = colours[int(k) % len(colours)]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.2))
        text = class_names[int(k)] if int(k) < len(class_names) else str(int(k))
        if scores is not None:
            text += f" {scores[i]:.2f}"
        ax.text(x0, y0, text, fontsize=6, color="white", va="bottom", bbox={"facecolor": colour, "pad": 0.5, "lw": 0})
    ax.axis("off")


def box_grid(images, true_rows, found, class_names: Sequence[str], title: str = "", columns: int = 4) -> Figure:
    """Test images with their true boxes (white, dashed) and the detections (boxes, scores, labels) per image."""
    import numpy as np

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    for ax, image, truth, (boxes, scores, labels) in zip(axes.flat, images, true_rows, found):
        truth = np.asarray(truth)
        draw_boxes(ax, image, boxes, labels, class_names, scores, truth=truth[truth[:, 4] >= 0, :4])
        ax.set_title(f"{len(boxes)} found / {int((truth[:, 4] >= 0).sum())} true", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def boxes_figure(image, boxes, labels, class_names: Sequence[str], scores=None, truth=None, title: str = "") -> Figure:
    """One picture with its detections (and true boxes), at a size that keeps its aspect ratio."""
    height, width = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8, max(2.0, 8 * height / width)))
    draw_boxes(ax, image, boxes, labels, class_names, scores, truth=truth)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def architecture(model, path) -> str | None:
    """Write keras.utils.plot_model's diagram to `path`; returns why not when pydot or Graphviz is missing."""
    import shutil

    import keras

    if shutil.which("dot") is None:
        return "Graphviz's dot is not installed (apt install graphviz, brew install graphviz)"
    try:
        import pydot  # noqa: F401
    except ImportError:
        return "pydot is not installed (pip install pydot)"
    keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_trainable=True, expand_nested=False,
                           dpi=72)
    return None


def metric_vs_params(table, params: Sequence[str], metric: str) -> Figure:
    """One panel per swept parameter: the metric of every run (dots) and its mean per value (line). Values
    are sorted numerically where they are numbers, else kept in first-seen order."""
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.6), squeeze=False)
    for ax, param in zip(axes[0], params):
        labels = [str(v) for v in table[param]]  # missing params (a run that lacked the key) read "None"
        values = list(dict.fromkeys(labels))
        numeric = all(is_number(v) for v in values)
        order = sorted(values, key=float) if numeric else values
        position = {v: i for i, v in enumerate(order)}
        x = [position[v] for v in labels]
        ax.scatter(x, table[metric], alpha=0.6, label="run")
        means = table.assign(_x=x).groupby("_x")[metric].mean()
        ax.plot(means.index, means.values, marker="o", color="tab:red", label="mean")
        ax.set_xticks(range(len(order)), order, rotation=30 if max(map(len, order)) > 6 else 0)
        ax.set(xlabel=param, ylabel=metric, title=f"{metric} vs {param}")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def overlaid_curves(panels: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """One panel per quantity (e.g. val_loss, val_accuracy), every run's per-epoch values overlaid."""
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=2, label=label[:40])
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch, all runs")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=1 + len(curves) // 12)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
