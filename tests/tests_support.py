"""Importable helpers for tests (conftest fixtures cannot be imported by name)."""

import keras
import numpy as np
from conftest import make_idx_dataset, write_idx  # noqa: F401

from nnlab.config.train import TrainerConfig
from nnlab.data import Data
from nnlab.models import build_model
from nnlab.training import train
from nnlab.training.optim import current_lr

TRAINER = TrainerConfig(epochs=3, batch_size=16, verbose=0)


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


def tiny_data(n=64, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.digitize(x[:, 0], np.quantile(x[:, 0], np.linspace(0, 1, classes + 1)[1:-1])).astype("int64")
    names = ["neg", "pos"] if classes == 2 else [f"c{i}" for i in range(classes)]
    return Data((x, y), (x[:16], y[:16]), (x[:32], y[:32]), "classification", names)


def compiled(data, lr=0.01):
    model = build_model({"name": "mlp", "widths": [8]}, data.input_shape, data.task, data.num_classes)
    train.compile_model(model, keras.optimizers.Adam(lr), data.task, TRAINER, data.num_classes)
    return model
