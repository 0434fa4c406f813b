"""Optimizers and learning-rate schedules.

A builder takes its config's keys (learning rate already resolved to a float or a schedule) and returns a
Keras optimizer. The decaying schedules follow the run's progress
(DecaySchedule), which a time budget can shorten; exponential decay is Keras's per-step schedule.
"""

import dataclasses
import math

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

SCHEDULES = ("constant", "cosine", "linear", "onecycle", "exponential", "plateau")
DECAYING = ("cosine", "linear", "onecycle")  # driven by DecaySchedule: they end at their floor with the run


def multiplier(schedule: ScheduleConfig, progress: float) -> float:
    """The decaying schedules' learning rate as a fraction of the peak, at `progress` (0: first step after any
    warm-up epochs, 1: the run's planned end)."""
    p = min(max(progress, 0.0), 1.0)
    if schedule.name == "onecycle":
        if p < schedule.pct_start:  # warm up from lr / div_factor to lr
            low = 1.0 / schedule.div_factor
            return low + (1.0 - low) * p / schedule.pct_start
        p = (p - schedule.pct_start) / (1.0 - schedule.pct_start)
    shape = 1.0 - p if schedule.name == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return schedule.alpha + (1.0 - schedule.alpha) * shape


class DecaySchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate from the share of the stage done, so that the decay ends with the
    training: after `epochs` epochs, or, with a time `budget` (callbacks.TimeBudget), at the batch where the
    budget will stop it on this machine, whichever comes first. The plan is re-made every few batches from the
    budget's measured speed, so a slow or shared machine decays sooner and still reaches the floor.

    Progress is integrated, not recomputed: each update moves it towards 1 by the share of the steps left that
    were just trained. A plan that shrinks (the machine slowed down) speeds the decay from then on and one that
    grows slows it; the rate never jumps and never climbs back. (Progress as step / planned total would jump
    ahead at a passing slowdown and, unable to move back, hold the rate flat and then at the floor for the
    epochs the recovered machine still trains.)

    A Keras schedule object cannot do this: it sees only the step count inside the compiled train step. The
    learning rate is a plain variable here, assigned between batches (every `every` batches), which every
    backend reads at its next step."""

    def __init__(self, schedule: ScheduleConfig, learning_rate: float, steps_per_epoch: int, first_epoch: int,
                 epochs: int, budget=None):
        super().__init__()
        self.schedule, self.peak, self.steps = schedule, learning_rate, max(steps_per_epoch, 1)
        self.first, self.epochs, self.budget = first_epoch, epochs, budget
        self.every = max(1, self.steps // 100)
        self.progress = 0.0
        self.last_step: int | None = None  # of the last update (None: none yet, e.g. just resumed)

    def planned_steps(self, step: int, batch: int) -> float:
        """Steps of this stage that will run: all of its epochs', or as many as the time budget lets run."""
        planned = self.epochs * self.steps
        fit = self.budget.steps_that_fit(batch, self.steps) if self.budget is not None else None
        return planned if fit is None else min(planned, step + fit)

    def rate(self, epoch: int, batch: int) -> float:
        step = (epoch - self.first) * self.steps + batch
        warmup = self.schedule.warmup_epochs * self.steps if self.schedule.name != "onecycle" else 0
        if step < warmup:
            return self.peak * step / warmup
        total = self.planned_steps(step, batch)
        if self.last_step is None:  # the first update, or the first after a resume: the share done so far
            self.progress = (step - warmup) / max(total - warmup, 1)
        elif step > self.last_step:
            left = total - self.last_step
            self.progress += (1.0 - self.progress) * min(1.0, (step - self.last_step) / max(left, 1e-9))
        self.progress, self.last_step = min(max(self.progress, 0.0), 1.0), step
        return self.peak * multiplier(self.schedule, self.progress)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if batch % self.every:
            return
        # On JAX, touching self.model syncs the loop's state first (Keras's Callback.model), so the new value
        # is the one the next step reads.
        self.model.optimizer.learning_rate = self.rate(self.epoch, batch)


def learning_rate(lr: float, schedule: ScheduleConfig, steps_per_epoch: int):
    """What the optimizer starts with: a float (DecaySchedule, when there is one, then sets it), or Keras's
    per-step exponential decay."""
    if schedule.name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=steps_per_epoch,
                                                           decay_rate=schedule.decay_rate)
    if schedule.name not in SCHEDULES:
        raise NnlabError(unknown_name("schedule", schedule.name, SCHEDULES))
    if schedule.name in DECAYING:
        return lr * (multiplier(schedule, 0.0) if schedule.name == "onecycle" or not schedule.warmup_epochs else 0.0)
    return lr


def build_optimizer(cfg: OptimizerConfig, steps_per_epoch: int, epochs: int, *, first_epoch: int = 0,
                    budget=None):
    """Return (optimizer, callbacks) for a stage of `epochs` epochs from `first_epoch` (0-based, counted over
    the whole run); `budget`: the run's callbacks.TimeBudget. The decaying schedules and reduce-on-plateau are
    callbacks. The config's fields other than name and schedule are the Keras optimizer's arguments."""
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("name", "schedule")}
    builder = OPTIMIZERS.get(cfg.name)  # a plugin's optimizer takes OptimizerConfig's fields (its YAML: +extras)
    schedule = cfg.schedule
    kwargs["learning_rate"] = learning_rate(cfg.learning_rate, schedule, steps_per_epoch)
    if kwargs.get("clipnorm") is None:
        kwargs.pop("clipnorm", None)
    callbacks = []
    if schedule.name in DECAYING:
        callbacks.append(DecaySchedule(schedule, cfg.learning_rate, steps_per_epoch, first_epoch, epochs,
                                       budget if schedule.fit_budget else None))
    if schedule.name == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=schedule.factor,
                                                           patience=schedule.patience,
                                                           min_lr=schedule.min_lr, verbose=0))
    return builder(**kwargs), callbacks


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
