"""Keras callbacks of the training loop: per-epoch metrics to a sink, the time budget, divergence, and the
per-epoch checkpoint that `nnlab resume` continues from.

Nothing here knows about MLflow: the tracker hands EpochMetrics its sink.
"""

import collections
import logging
import math
import time
from pathlib import Path
from typing import Any

import keras

from nnlab.errors import NnlabError
from nnlab.files import check_space
from nnlab.training.checkpoints import (  # noqa: F401  (the names train.py and the tests know them by)
    LATEST,
    ROOM,
    STATE,
    WEIGHTS,
    expected_bytes,
    load_checkpoint,
    restore_weights,
    save_checkpoint,
)
from nnlab.training.optim import current_lr

log = logging.getLogger(__name__)


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
    """Stops training when the next batch would overrun `max_minutes`, mid-epoch if need be: the partial epoch
    is still validated and logged, so a slow machine loses at most one batch of its budget, not the tail of an
    epoch. The end of an epoch (validation, checkpoint, logging: measured as the gap between epochs) is held
    in reserve. One instance spans all the stages of a schedule; a resumed run starts with the time it had
    used and the speed it had measured (`slowest`, the epoch-level figure of earlier checkpoints, is ignored).
    """

    WINDOW = 256  # batches the speed is averaged over: the machine's speed now, not at the start

    def __init__(self, max_minutes: float, used: float = 0.0, tail: float = 0.0,
                 step_seconds: float | None = None, slowest: float | None = None):
        super().__init__()
        self.budget = max_minutes * 60.0
        self.stopped = False
        self.share = 1.0  # of its epoch's batches, the last epoch trained (under 1 after a mid-epoch stop)
        self.start: float | None = None
        self.used_before, self.tail = used, tail
        self.durations: collections.deque[float] = collections.deque(maxlen=self.WINDOW)
        self.total = 0.0  # of self.durations, kept as they come and go: read at every batch
        if step_seconds:
            self.add_duration(step_seconds)
        self.batch_start = self.last_batch_end = None
        self.first_batch = True

    def used(self) -> float:
        return self.used_before if self.start is None else time.perf_counter() - self.start

    def add_duration(self, seconds: float) -> None:
        if len(self.durations) == self.durations.maxlen:
            self.total -= self.durations[0]
        self.durations.append(seconds)
        self.total += seconds

    def step_seconds(self) -> float | None:
        mean = self.total / len(self.durations) if self.durations else 0.0
        return mean if mean > 0 else None

    def out_of_time(self, now: float) -> bool:
        """Whether one more batch and an epoch's end would overrun the budget."""
        return now - self.start + (self.step_seconds() or 0.0) + self.tail > self.budget

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, for `TimeBudget(max_minutes, **state)` on resume."""
        return {"used": self.used(), "tail": self.tail, "step_seconds": self.step_seconds()}

    def steps_that_fit(self, batch: int, steps: int) -> float | None:
        """Training steps that still fit from batch `batch` (0-based) of an epoch of `steps`, at the measured
        speed, with an epoch end held back for this epoch and each later one; None before any speed is known."""
        per_step = self.step_seconds()
        if per_step is None:
            return None
        left = self.budget - self.used()
        rough = max(0.0, left - self.tail) / per_step
        later_ends = max(0, math.ceil((batch + rough) / max(steps, 1)) - 1)
        return max(0.0, left - self.tail * (1 + later_ends)) / per_step

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.perf_counter() - self.used_before
        self.first_batch = True  # a fit's first batch includes tracing and compiling: not the machine's speed
        self.last_batch_end = None  # nor is the gap between two stages' fits an epoch end

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_start = time.perf_counter()
        if batch == 0 and self.last_batch_end is not None:
            # Validation, checkpoint and logging of the epoch that ended: the reserve for the next epoch end
            self.tail = self.batch_start - self.last_batch_end

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        steps = self.params.get("steps") if self.params else None
        # A batch's time runs from the previous batch's end, so that it includes fetching its data; an
        # epoch's first batch follows the epoch end (one-batch epochs: from its own start).
        if batch > 0 and self.last_batch_end is not None:
            self.add_duration(now - self.last_batch_end)
        elif steps == 1 and not self.first_batch:
            self.add_duration(now - self.batch_start)
        self.first_batch, self.last_batch_end = False, now
        if self.out_of_time(now):
            self.stop(share=(batch + 1) / steps if steps else 1.0)

    def on_epoch_end(self, epoch, logs=None):
        if not self.stopped and self.out_of_time(time.perf_counter()):
            self.stop(share=1.0)

    def stop(self, share: float) -> None:
        self.stopped, self.share = True, min(share, 1.0)
        self.model.stop_training = True
        where = f"{self.share:.0%} into the epoch" if self.share < 1 else "at the end of an epoch"
        log.info("time budget of %.1f min reached %s (%.0f s used, %.3f s a batch, %.1f s held back for the "
                 "epoch's end): stopping", self.budget / 60, where, self.used(), self.step_seconds() or 0.0,
                 self.tail)


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
    then a `latest` pointer renamed over the old one; the last two are kept (nnlab.training.checkpoints). A
    crash mid-write leaves the previous checkpoints whole; a disk without room for one fails before training
    starts. (BackupAndRestore itself writes in place and deletes its folder at the end of every fit, that is
    of every stage, and knows nothing of stages, budgets or history.)"""

    def __init__(self, folder: str | Path, state):
        super().__init__()
        self.folder, self.state = Path(folder), state

    def on_train_begin(self, logs=None):
        check_space(self.folder, expected_bytes(self.model, self.folder), "for the checkpoint", ROOM)

    def on_epoch_end(self, epoch, logs=None):
        if math.isfinite(float((logs or {}).get("loss", 0.0))):  # a diverged epoch is no state to resume
            save_checkpoint(self.folder, self.model, self.state(epoch, logs or {}))
