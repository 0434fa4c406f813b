"""Figures for the lab report: learning curves and the confusion matrix."""

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


def close(fig: Figure) -> None:
    plt.close(fig)
