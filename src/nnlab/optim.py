"""Optimizers and learning-rate schedules.

A builder takes its config's keys (learning rate already resolved to a float or a schedule) and returns a
Keras optimizer. Schedules are defined per epoch in the config and turned into per-step schedules here,
because Keras optimizers count steps.
"""

from collections.abc import Mapping
from typing import Any

import keras

from nnlab.errors import NnlabError, unknown_name
from nnlab.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd")(keras.optimizers.SGD)
OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)
OPTIMIZERS.register("nadam")(keras.optimizers.Nadam)
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)

SCHEDULES = ("constant", "cosine", "exponential", "plateau")


def learning_rate(lr: float, schedule: Mapping[str, Any], steps_per_epoch: int, epochs: int):
    name = schedule.get("name", "constant")
    if name in ("constant", "plateau"):
        return lr
    if name == "cosine":
        warmup = int(schedule.get("warmup_epochs", 0)) * steps_per_epoch
        decay_steps = max(epochs * steps_per_epoch - warmup, 1)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps, alpha=schedule.get("alpha", 0.0), warmup_target=lr, warmup_steps=warmup
            )
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=schedule.get("alpha", 0.0))
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=steps_per_epoch, decay_rate=schedule.get("decay_rate", 0.9)
        )
    raise NnlabError(unknown_name("schedule", name, SCHEDULES))


def build_optimizer(cfg: Mapping[str, Any], steps_per_epoch: int, epochs: int):
    """Return (optimizer, callbacks); reduce-on-plateau is a callback, not a schedule."""
    kwargs = dict(cfg)
    builder = OPTIMIZERS.get(kwargs.pop("name"))
    schedule = dict(kwargs.pop("schedule", None) or {"name": "constant"})
    kwargs["learning_rate"] = learning_rate(kwargs["learning_rate"], schedule, steps_per_epoch, epochs)
    if kwargs.get("clipnorm") is None:
        kwargs.pop("clipnorm", None)
    callbacks = []
    if schedule.get("name") == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=schedule.get("factor", 0.5), patience=schedule.get("patience", 2),
            min_lr=schedule.get("min_lr", 1e-6), verbose=0,
        ))
    return builder(**kwargs), callbacks


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
