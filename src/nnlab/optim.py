"""Optimizers and learning-rate schedules.

A builder takes its config's keys (learning rate already resolved to a float or a schedule) and returns a
Keras optimizer. Schedules are defined per epoch in the config and turned into per-step schedules here,
because Keras optimizers count steps.
"""

import dataclasses

import keras

from nnlab.config.optim import OptimizerConfig, ScheduleConfig
from nnlab.errors import NnlabError, unknown_name
from nnlab.registry import Registry

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd")(keras.optimizers.SGD)
OPTIMIZERS.register("adam")(keras.optimizers.Adam)
OPTIMIZERS.register("adamw")(keras.optimizers.AdamW)
OPTIMIZERS.register("nadam")(keras.optimizers.Nadam)
OPTIMIZERS.register("rmsprop")(keras.optimizers.RMSprop)

SCHEDULES = ("constant", "cosine", "exponential", "plateau")


def learning_rate(lr: float, schedule: ScheduleConfig, steps_per_epoch: int, epochs: int):
    if schedule.name in ("constant", "plateau"):
        return lr
    if schedule.name == "cosine":
        warmup = schedule.warmup_epochs * steps_per_epoch
        decay_steps = max(epochs * steps_per_epoch - warmup, 1)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha=schedule.alpha, warmup_target=lr,
                                                          warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=schedule.alpha)
    if schedule.name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=steps_per_epoch,
                                                           decay_rate=schedule.decay_rate)
    raise NnlabError(unknown_name("schedule", schedule.name, SCHEDULES))


def build_optimizer(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int):
    """Return (optimizer, callbacks); reduce-on-plateau is a callback, not a schedule. The config's fields other
    than name and schedule are the Keras optimizer's arguments."""
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("name", "schedule")}
    builder = OPTIMIZERS.get(cfg.name)  # a plugin's optimizer takes OptimizerConfig's fields (its YAML: +extras)
    kwargs["learning_rate"] = learning_rate(cfg.learning_rate, cfg.schedule, steps_per_epoch, epochs)
    if kwargs.get("clipnorm") is None:
        kwargs.pop("clipnorm", None)
    callbacks = []
    if cfg.schedule.name == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=cfg.schedule.factor,
                                                           patience=cfg.schedule.patience,
                                                           min_lr=cfg.schedule.min_lr, verbose=0))
    return builder(**kwargs), callbacks


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
