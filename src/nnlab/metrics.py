"""Per-class evaluation of a classifier (computed by scikit-learn) and a regressor's errors."""

import re
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix


@dataclass
class ClassReport:
    y_true: np.ndarray
    y_pred: np.ndarray
    labels: list[int]
    class_names: list[str]
    text: str
    table: dict
    confusion: np.ndarray

    def metrics(self) -> dict[str, float]:
        """test_precision_<class>, test_recall_<class>, test_f1_<class>, plus the macro/weighted averages."""
        out = {}
        for name in self.class_names:
            row = self.table[name]
            for key, short in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1")):
                out[f"test_{short}_{metric_safe(name)}"] = float(row[key])
        for avg in ("macro avg", "weighted avg"):
            out[f"test_f1_{avg.split()[0]}"] = float(self.table[avg]["f1-score"])
        return out


def metric_safe(name: str) -> str:
    """MLflow metric names allow few characters, and '/' would nest in the UI ('T-shirt/top')."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_")


def class_report(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> ClassReport:
    y_true = np.asarray(y_true).reshape(-1)
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2 and probabilities.shape[1] == 1:  # one sigmoid unit: P(class 1)
        y_pred = (probabilities[:, 0] > 0.5).astype(int)
    else:
        y_pred = np.argmax(probabilities, axis=-1)
    labels = list(range(len(class_names)))
    kwargs = dict(labels=labels, target_names=class_names, digits=4, zero_division=0)
    return ClassReport(
        y_true, y_pred, labels, class_names,
        text=classification_report(y_true, y_pred, **kwargs),
        table=classification_report(y_true, y_pred, output_dict=True, **kwargs),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
    )


def regression_errors(predictions, y_true, target_scale, suffix: str = "") -> dict[str, float]:
    error = np.asarray(predictions, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1)
    out = {f"test_mae{suffix}": float(np.abs(error).mean()), f"test_rmse{suffix}": float(np.sqrt((error**2).mean()))}
    if target_scale is not None:  # also in the target's own units (passengers, $1000s…)
        error = error * target_scale[1]
        out |= {f"test_mae_original{suffix}": float(np.abs(error).mean()),
                f"test_rmse_original{suffix}": float(np.sqrt((error**2).mean()))}
    return out
