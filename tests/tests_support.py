"""Importable helpers for tests (conftest fixtures cannot be imported by name)."""

import keras
from conftest import make_idx_dataset, write_idx  # noqa: F401

from nnlab.optim import current_lr


class Clock:
    """A simulated machine: perf_counter advances only while a training batch runs, by `per_batch` seconds,
    and while the validation set is scored at an epoch's end, by `per_validation`."""

    def __init__(self, per_batch: float, per_validation: float = 0.0):
        self.now, self.per_batch, self.per_validation = 1000.0, per_batch, per_validation

    def __call__(self) -> float:
        return self.now


class Ticks(keras.callbacks.Callback):
    """Records the learning rate each batch trains with and advances the clock by the batch's time (it runs
    after nnlab's own callbacks have seen the batch begin, so for them the time passes inside the batch)."""

    def __init__(self, clock: Clock):
        super().__init__()
        self.clock, self.rates = clock, []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(current_lr(self.model.optimizer))
        self.clock.now += self.clock.per_batch

    def on_test_begin(self, logs=None):  # fit's validation at each epoch end
        self.clock.now += self.clock.per_validation
