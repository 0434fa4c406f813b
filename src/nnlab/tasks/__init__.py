"""Kinds of job: each task is one module that owns its head, losses, metrics, test evaluation and figures.

A dataset names the task it serves (`Data.task`); the model builder, the trainer, the app, the sweeper and
`nnlab report` ask the task and never branch on its name. Adding a kind of job is one new module here.

Keras is imported inside the methods that need it: `nnlab report` and the sweep callback read the class
attributes (headline metric, objective) without loading Keras.
"""

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from nnlab.config import checks
from nnlab.errors import NnlabError, unknown_name
from nnlab.registry import Registry

TASKS = Registry("task")
LOSS_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
                "msle": "mean_squared_logarithmic_error", "logcosh": "log_cosh"}
# Metric names where a larger value is better (for best epochs and sort order); the rest are errors.
HIGHER_IS_BETTER = ("acc", "auc", "iou", "dice", "precision", "recall", "f1")
MEAN_AP = re.compile(r"map\d*")  # detection's map, map50, map75 (a whole word: mape is an error)
ACRONYMS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "mape": "MAPE", "iou": "IoU", "auc": "AUC", "f1": "F1",
            "map50": "mAP@0.5", "map": "mAP@[.5:.95]"}


def higher_is_better(metric: str) -> bool:
    return any(word in metric for word in HIGHER_IS_BETTER) or any(MEAN_AP.fullmatch(w) for w in metric.split("_"))


class Task:
    """The contract every kind of job fulfils. Class attributes are what the report and the sweeper read."""

    name: ClassVar[str]
    categorical: ClassVar[bool] = False  # targets are class indices (stratified splits, per-class metrics)
    monitor: ClassVar[str] = "val_loss"  # default of early stopping and of the `best_*` epoch
    headline: ClassVar[str]  # the test metric a report sorts by
    objective: ClassVar[tuple[str, ...]]  # what a sweeper optimises: the first of these the run logged
    epoch_metrics: ClassVar[tuple[str, ...]]  # per-epoch quantities a report shows at the best epoch
    test_columns: ClassVar[tuple[str, ...]] = ()  # test metrics a report shows
    losses: ClassVar[tuple[str, ...]]  # loss names the task accepts (Keras names, aliases, its own)
    model_modules: ClassVar[tuple[str, ...]] = ()  # modules that register its models' classes for loading

    def head(self, x, num_classes: int):
        raise NotImplementedError

    def head_units(self, num_classes: int) -> int:
        """Output units of the head (ensembles average one-unit heads only)."""
        raise NotImplementedError

    def default_loss(self, num_classes: int) -> str:
        raise NotImplementedError

    def default_metrics(self, num_classes: int) -> list[str]:
        raise NotImplementedError

    def loss(self, name: str | None, options: Mapping[str, Any] | None, num_classes: int):
        """The configured loss (an accepted name, with its class's options), or the task's default."""
        name = LOSS_ALIASES.get(name, name) if name else self.default_loss(num_classes)
        if name not in self.losses and name not in LOSS_ALIASES.values():
            raise NnlabError(unknown_name(f"trainer.loss for {self.name}", name, [*self.losses, *LOSS_ALIASES]))
        return keras_loss(name, options)

    def metric(self, name: str, num_classes: int):
        """A metric by name: Keras's names, plus rmse (Keras has no string for it)."""
        import keras

        if name in ("rmse", "root_mean_squared_error"):
            return keras.metrics.RootMeanSquaredError(name="rmse")
        try:
            keras.metrics.get(name)
        except ValueError:
            raise NnlabError(unknown_name("trainer.metrics entry", name, ["accuracy", "auc", "precision", "recall",
                                                                          "mae", "mse", "rmse", "mape", "msle"]))
        return name

    def metrics(self, names: Sequence[str] | None, num_classes: int) -> list:
        return [self.metric(n, num_classes) for n in (names or self.default_metrics(num_classes))]

    def compile_args(self, loss: str | None, options: Mapping[str, Any] | None, metrics: Sequence[str] | None,
                     num_classes: int) -> dict[str, Any]:
        """`model.compile`'s loss and metrics arguments for trainer.loss, loss_options and metrics."""
        return {"loss": self.loss(loss, options, num_classes), "metrics": self.metrics(metrics, num_classes)}

    def targets(self, y: np.ndarray) -> Any:
        """The targets `fit` and `evaluate` receive, from the loader's arrays (detection: a dict of them)."""
        return y

    def predict(self, model, x, batch_size: int):
        """The model's raw outputs for x (what `evaluate`, `log_results` and `describe_predictions` take)."""
        return model.predict(x, batch_size=batch_size, verbose=0)

    def epoch_callbacks(self, data, batch_size: int) -> list:
        """Callbacks that add the task's own validation scores to each epoch's logs (detection's mAP)."""
        return []

    def serving_model(self, model):
        """The model as MLflow logs it for serving (see nnlab.layers.serving_model)."""
        from nnlab.layers import serving_model

        return serving_model(model)

    def augmentation(self, augment, seed: int):
        """(augment config for the model's image-only input layers, a transform(x, y, rng) of training batches in
        the pipeline or None): where image and target must change together, the task moves it to the pipeline."""
        return augment, None

    def evaluate(self, model, data, predictions: np.ndarray, batch_size: int) -> dict[str, float]:
        """Task-specific test metrics from the predictions, beside the compiled metrics' test_* scores."""
        return {}

    def log_results(self, sink, data, predictions: np.ndarray, title: str) -> dict[str, float]:
        """Figures and tables for the lab report (sink: anything with .text(text, path) and .figure(fig, path));
        returns extra metrics."""
        return {}

    def describe_predictions(self, predictions: np.ndarray, class_names: Sequence[str] | None,
                             target_scale: Sequence[float] | None = None, *, baseline: np.ndarray | None = None,
                             out: str | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """`nnlab predict`'s answer for each input, from the model's raw outputs: one dict per input whose keys are
        its predictions.csv columns, plus `_title` (a short caption for predictions.png) and, for a class map,
        `_overlay` (drawn over the image). `target_scale` (offset, scale) maps outputs to the target's own units,
        `baseline` (per input, in those units) is added where the model predicts a change; `out` is the output
        folder for files the task writes, named by `names` (one per input)."""
        raise NotImplementedError

    def describe(self, metrics: Mapping[str, float]) -> str:
        """The headline test result in words, for the run's description: a score as a percentage ("test
        accuracy 92.6%", "test mean IoU 71.3%"), an error as a number ("test MAE 0.312", plus its value in the
        target's own units where the run logged one)."""
        value = metrics.get(self.headline)
        words = " ".join(ACRONYMS.get(w, w) for w in self.headline.split("_"))
        if value is None or not np.isfinite(value):
            return f"no {words}"
        if higher_is_better(self.headline):
            return f"{words} {100 * value:.1f}%"
        original = metrics.get(f"{self.headline}_original")
        return f"{words} {value:.4g}" + (f" ({original:.4g} in the target's units)" if original is not None else "")

    def objective_value(self, metrics: Mapping[str, float]) -> float | None:
        """The value a sweeper optimises: the validation metric at the best epoch; the test value only where the
        run had no validation split (tuning on the test set makes its score optimistic)."""
        return next((metrics[k] for k in self.objective if k in metrics), None)


def keras_loss(name: str, options: Mapping[str, Any] | None):
    """A Keras loss by name; `options` go to its class (huber's delta)."""
    import keras

    if not options:
        keras.losses.get(name)
        return name
    cls = getattr(keras.losses, "".join(p.title() for p in name.split("_")), None)
    try:
        return cls(**options)
    except TypeError as err:  # also: no loss class of that name
        raise NnlabError(f"trainer.loss_options {dict(options)} do not fit loss '{name}' ({err}); remove them or "
                         "use the loss class's argument names (huber: delta).") from None


def get_task(task: "str | Task") -> Task:
    return task if isinstance(task, Task) else TASKS.get(task)()


def loss_names() -> list[str]:
    """Every loss some registered task accepts (plugins' tasks included), and the aliases."""
    names = {*LOSS_ALIASES, *LOSS_ALIASES.values()}
    for name in TASKS.names():
        names.update(TASKS.get(name).losses)
    return sorted(names)


def metric_names() -> list[str]:
    """The tasks' default metrics and the Keras names people use (each accepted by some task's metric())."""
    names = set(checks.KERAS_METRICS)
    for name in TASKS.names():
        task = TASKS.get(name)()
        for classes in (2, 3):
            names.update(task.default_metrics(classes))
    return sorted(names)


checks.provide("trainer.loss", loss_names)  # the trainer config's names, checked before Keras is imported
checks.provide("trainer.metrics", metric_names)


def log_json(sink, table: Any, path: str) -> None:
    sink.text(json.dumps(table, indent=2), path)


from nnlab.tasks import classification, detection, regression, segmentation  # noqa: E402,F401  (registration)
