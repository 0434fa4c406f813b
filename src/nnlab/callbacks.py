"""Keras callbacks of the training loop: per-epoch metrics to a sink, the time budget, divergence, and the
per-epoch checkpoint that `nnlab resume` continues from.

Nothing here knows about MLflow: the tracker hands EpochMetrics its sink.
"""

import json
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import keras

from nnlab.errors import NnlabError
from nnlab.files import fsync_dir, write_text
from nnlab.optim import current_lr

log = logging.getLogger(__name__)
WEIGHTS, STATE, LATEST = "weights.weights.h5", "state.json", "latest"


class EpochMetrics(keras.callbacks.Callback):
    """Hands each epoch's metrics and learning rate to `sink(metrics, step)`, step = 1-based epoch (the
    tracker provides the sink: training itself never imports tracking)."""

    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def on_epoch_end(self, epoch, logs=None):
        metrics = dict(logs or {})
        try:
            metrics["lr"] = current_lr(self.model.optimizer)
        except (AttributeError, TypeError, ValueError):
            pass
        self.sink(metrics, step=epoch + 1)


class TimeBudget(keras.callbacks.Callback):
    """Stops after the epoch when the next one would overrun `max_minutes` (judged by the slowest so far).
    One instance spans all the stages of a schedule; a resumed run starts with the time it had used."""

    def __init__(self, max_minutes: float, used: float = 0.0, slowest: float = 0.0):
        super().__init__()
        self.budget = max_minutes * 60.0
        self.stopped = False
        self.start: float | None = None
        self.used_before, self.slowest = used, slowest

    def used(self) -> float:
        return self.used_before if self.start is None else time.perf_counter() - self.start

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.perf_counter() - self.used_before

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.epoch_start)
        if now - self.start + self.slowest > self.budget:
            self.stopped = True
            self.model.stop_training = True
            log.info("time budget of %.1f min reached after epoch %d: stopping", self.budget / 60, epoch + 1)


class Divergence(keras.callbacks.TerminateOnNaN):
    """Keras's TerminateOnNaN (stops within the epoch, at the first NaN or infinite batch loss) that also
    remembers where, so the job can fail with one sentence instead of finishing on a NaN model."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int, float] | None = None  # 1-based epoch, 1-based batch, loss

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.where is None:
            self.where = (self.epoch, batch + 1, float(loss))
            self.model.stop_training = True

    def check(self, model: keras.Model) -> None:
        if self.where is None:
            return
        epoch, batch, loss = self.where
        try:
            lr = f" at learning rate {current_lr(model.optimizer):.3g}"
        except (AttributeError, TypeError, ValueError):
            lr = ""
        raise NnlabError(f"Training diverged: the loss became {loss} at epoch {epoch}, batch {batch}{lr}; lower "
                         "optimizer.learning_rate (e.g. by 10x) or set optimizer.clipnorm=1.0.")


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: the weights with the optimizer's state (Keras's own save_weights, as BackupAndRestore
    writes them) and the loop's state (`state()`: epoch, stage, history, budget used) in a new folder, fsync'd,
    then a `latest` pointer renamed over the old one. A crash mid-write leaves the previous checkpoint whole.
    (BackupAndRestore itself writes in place and deletes its folder at the end of every fit, that is of every
    stage, and knows nothing of stages, budgets or history.)"""

    def __init__(self, folder: str | Path, state):
        super().__init__()
        self.folder, self.state = Path(folder), state

    def on_epoch_end(self, epoch, logs=None):
        if math.isfinite(float((logs or {}).get("loss", 0.0))):  # a diverged epoch is no state to resume
            save_checkpoint(self.folder, self.model, self.state(epoch, logs or {}))


def save_checkpoint(folder: Path, model: keras.Model, state: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    model.save_weights(tmp / WEIGHTS)
    write_text(tmp / STATE, json.dumps(state))
    slot = folder / f"epoch-{state['epoch']:05d}"
    if slot.exists():
        shutil.rmtree(slot)
    os.replace(tmp, slot)
    fsync_dir(folder)
    write_text(folder / LATEST, slot.name)
    for old in folder.glob("epoch-*"):
        if old != slot:
            shutil.rmtree(old, ignore_errors=True)
    return slot


def load_checkpoint(folder: str | Path) -> tuple[dict[str, Any], Path] | None:
    """(state, weights file) of the latest complete checkpoint in `folder`, or None when there is none."""
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None
    slot = Path(folder) / pointer.read_text().strip()
    try:
        state = json.loads((slot / STATE).read_text())
    except (OSError, ValueError):
        return None
    return (state, slot / WEIGHTS) if (slot / WEIGHTS).is_file() else None


def restore_weights(model: keras.Model, weights: Path, optimizer: bool = True) -> None:
    """The weights and, with `optimizer`, the optimizer's state (its step count drives the learning-rate
    schedule). Without it the compiled optimizer stays fresh: a checkpoint from a stage's last epoch holds the
    finished stage's optimizer, whose moments, step count and variables are not the next stage's."""
    if not optimizer:
        model.load_weights(weights, objects_to_skip=[model.optimizer] if model.optimizer is not None else None)
        return
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(weights)
