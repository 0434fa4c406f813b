"""Training: runtime setup, compile, fit with budget/early stopping, and the final test evaluation.

Nothing here knows about MLflow: tracking hooks in through the `callbacks` argument.
"""

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from nnlab.data import Data
from nnlab.data.pipeline import batches

log = logging.getLogger(__name__)


def devices() -> list[str]:
    """Accelerators visible to the active Keras backend, as readable names; empty on CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def setup_runtime(seed: int, mixed_precision: bool) -> dict[str, Any]:
    """Seed everything and pick the dtype policy; returns facts worth logging."""
    # Jobs of a sweep share one process: drop the previous job's graphs and layer-name counters.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    gpus = devices()
    # float16 compute on a CPU is emulated and slow, so the switch only takes effect on an accelerator.
    effective = bool(mixed_precision and gpus)
    if mixed_precision and not gpus:
        log.warning("trainer.mixed_precision=true ignored: no GPU is visible, training in float32")
    keras.mixed_precision.set_dtype_policy("mixed_float16" if effective else "float32")
    return {
        "backend": keras.backend.backend(),
        "device": ", ".join(gpus) if gpus else "CPU",
        "mixed_precision_effective": effective,
    }


def default_loss(task: str) -> str:
    return "sparse_categorical_crossentropy" if task == "classification" else "mean_squared_error"


def default_metrics(task: str) -> list[Any]:
    if task == "classification":
        return ["accuracy"]
    return ["mae", keras.metrics.RootMeanSquaredError(name="rmse")]


def compile_model(model: keras.Model, optimizer, task: str, trainer: Mapping[str, Any]) -> None:
    jit = trainer.get("jit_compile")
    model.compile(
        optimizer=optimizer,
        loss=trainer.get("loss") or default_loss(task),
        metrics=list(trainer.get("metrics") or default_metrics(task)),
        jit_compile="auto" if jit is None else bool(jit),
    )


class TimeBudget(keras.callbacks.Callback):
    """Stops after the epoch when the next one would overrun `max_minutes` (judged by the slowest so far)."""

    def __init__(self, max_minutes: float):
        super().__init__()
        self.budget = max_minutes * 60.0
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.epoch_start = self.start
        self.slowest = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.epoch_start)
        if now - self.start + self.slowest > self.budget:
            self.stopped = True
            self.model.stop_training = True
            log.info("time budget of %.1f min reached after epoch %d: stopping", self.budget / 60, epoch + 1)


@dataclass
class FitResult:
    history: dict[str, list[float]]
    seconds: float
    epochs_run: int
    stopped_by: str  # "epochs" | "early_stopping" | "time_budget"
    best_epoch: int | None = None  # 1-based, by the early-stopping monitor (val_loss by default)


def best_epoch(history: Mapping[str, Sequence[float]], monitor: str) -> int | None:
    values = history.get(monitor)
    if not values:
        return None
    pick = np.argmax if "acc" in monitor or "auc" in monitor else np.argmin
    return int(pick(values)) + 1


def fit(model: keras.Model, data: Data, trainer: Mapping[str, Any], callbacks: Sequence[Any] = (),
        seed: int = 0) -> FitResult:
    own: list[Any] = []
    stopper = early = None
    if trainer.get("max_minutes"):
        stopper = TimeBudget(float(trainer["max_minutes"]))
        own.append(stopper)
    es = trainer.get("early_stopping") or {}
    monitor = es.get("monitor", "val_loss")
    if data.val is None:  # no validation split: watch the training quantity instead
        monitor = monitor.removeprefix("val_")
    if es.get("patience") is not None:
        early = keras.callbacks.EarlyStopping(
            monitor=monitor, patience=int(es["patience"]), min_delta=es.get("min_delta", 0.0),
            restore_best_weights=es.get("restore_best_weights", True), verbose=1,
        )
        own.append(early)
    verbose = trainer.get("verbose")
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    batch_size = int(trainer["batch_size"])
    train_batches = batches(*data.train, batch_size, shuffle=True, seed=seed)
    val_batches = batches(*data.val, batch_size, shuffle=False) if data.val is not None else None
    start = time.perf_counter()
    history = model.fit(train_batches, validation_data=val_batches, epochs=int(trainer["epochs"]),
                        callbacks=[*own, *callbacks], verbose=verbose, shuffle=False)  # batches() shuffles
    seconds = time.perf_counter() - start
    epochs_run = len(history.epoch)
    stopped_by = "epochs"
    if epochs_run < int(trainer["epochs"]):  # a stop requested after the last epoch changed nothing
        if stopper is not None and stopper.stopped:
            stopped_by = "time_budget"
        elif early is not None and early.stopped_epoch > 0:
            stopped_by = "early_stopping"
    return FitResult(history.history, seconds, epochs_run, stopped_by, best_epoch(history.history, monitor))


def evaluate(model: keras.Model, data: Data, batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics (prefixed test_) and the raw predictions, computed once each."""
    x_test, y_test = data.test
    scores = model.evaluate(batches(x_test, y_test, batch_size, shuffle=False), verbose=0, return_dict=True)
    predictions = model.predict(x_test, batch_size=batch_size, verbose=0)
    metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    if data.target_scale is not None:  # also report the error in the target's own units (passengers, $…)
        offset, scale = data.target_scale
        error = (np.asarray(predictions).reshape(-1) - np.asarray(y_test).reshape(-1)) * scale
        metrics |= {"test_mae_original": float(np.abs(error).mean()),
                    "test_rmse_original": float(np.sqrt((error**2).mean()))}
    return metrics, predictions
