import dataclasses
import importlib.util
import os
import subprocess
import sys
import time

import keras
import pytest
from tests_support import Clock, Ticks

from nnlab.config.optim import AdamConfig, AdamWConfig, NadamConfig, RMSpropConfig, ScheduleConfig, SGDConfig
from nnlab.errors import NnlabError
from nnlab.training.optim import DecaySchedule, build_optimizer, current_lr, multiplier


@pytest.mark.parametrize(
    ("config", "cls"),
    [(SGDConfig, keras.optimizers.SGD), (AdamConfig, keras.optimizers.Adam), (RMSpropConfig, keras.optimizers.RMSprop),
     (AdamWConfig, keras.optimizers.AdamW), (NadamConfig, keras.optimizers.Nadam)],
)
def test_each_optimizer_builds_with_its_learning_rate(config, cls):
    opt, callbacks = build_optimizer(config(learning_rate=0.05, schedule=ScheduleConfig(name="constant"),
                                            clipnorm=None), steps_per_epoch=10, epochs=3)
    assert isinstance(opt, cls)
    assert current_lr(opt) == pytest.approx(0.05)
    assert callbacks == []


def test_sgd_momentum_and_nesterov_reach_keras():
    opt, _ = build_optimizer(SGDConfig(learning_rate=0.1, momentum=0.9, nesterov=True,
                                       schedule=ScheduleConfig(name="constant"), clipnorm=1.0), 10, 3)
    assert opt.momentum == 0.9 and opt.nesterov is True and opt.clipnorm == 1.0


@pytest.mark.parametrize(("name", "alpha", "middle"), [("cosine", 0.1, 0.55), ("linear", 0.1, 0.55),
                                                        ("cosine", 0.0, 0.5)])
def test_decaying_schedules_run_from_the_peak_to_alpha(name, alpha, middle):
    schedule = ScheduleConfig(name=name, alpha=alpha)
    assert multiplier(schedule, 0.0) == pytest.approx(1.0)
    assert multiplier(schedule, 0.5) == pytest.approx(middle)
    assert multiplier(schedule, 1.0) == pytest.approx(alpha)
    assert multiplier(schedule, 1.5) == pytest.approx(alpha)  # past the planned end: stays at the floor


def test_one_cycle_warms_up_from_a_fraction_of_the_peak_then_decays():
    schedule = ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=20.0)
    assert multiplier(schedule, 0.0) == pytest.approx(0.05)
    assert multiplier(schedule, 0.125) == pytest.approx(0.525)
    assert multiplier(schedule, 0.25) == pytest.approx(1.0)
    assert multiplier(schedule, 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize(("warmup", "start"), [(0, 1.0), (1, 0.0)])
def test_decaying_schedules_are_a_callback_on_a_plain_learning_rate(warmup, start):
    opt, callbacks = build_optimizer(
        AdamConfig(learning_rate=0.5, schedule=ScheduleConfig(name="cosine", warmup_epochs=warmup)), 10, 5)
    assert current_lr(opt) == pytest.approx(0.5 * start)  # a variable the callback sets, not a schedule object
    (schedule,) = callbacks
    assert isinstance(schedule, DecaySchedule) and schedule.epochs == 5
    schedule.on_epoch_begin(0)
    assert schedule.rate(0, 0) == pytest.approx(0.5 * start)
    if warmup:
        assert schedule.rate(0, 5) == pytest.approx(0.25)  # halfway through the warm-up epoch
    warm = 10 * warmup
    assert schedule.rate(2, 5) == pytest.approx(0.5 * multiplier(schedule.schedule, (25 - warm) / (50 - warm)))
    assert schedule.rate(4, 9) == pytest.approx(0.5 * multiplier(schedule.schedule, (49 - warm) / (50 - warm)))


def test_exponential_decays_once_per_epoch():
    opt, _ = build_optimizer(SGDConfig(learning_rate=1.0, schedule=ScheduleConfig(name="exponential", decay_rate=0.5)),
                             10, 5)
    assert float(opt._learning_rate(20)) == pytest.approx(0.25)


def test_plateau_is_a_callback():
    opt, callbacks = build_optimizer(AdamConfig(learning_rate=0.01,
                                                schedule=ScheduleConfig(name="plateau", factor=0.2, patience=1)), 10, 5)
    assert isinstance(callbacks[0], keras.callbacks.ReduceLROnPlateau)
    assert callbacks[0].factor == 0.2


def test_unknown_schedule_and_optimizer():
    with pytest.raises(NnlabError, match="did you mean 'cosine'"):
        build_optimizer(AdamConfig(learning_rate=0.1, schedule=ScheduleConfig(name="cosin")), 10, 5)
    with pytest.raises(NnlabError, match="did you mean 'adam'"):
        build_optimizer(dataclasses.replace(AdamConfig(learning_rate=0.1), name="adma"), 10, 5)


def test_weight_averaging_is_passed_to_keras():
    opt, _ = build_optimizer(AdamConfig(learning_rate=1e-3, use_ema=True, ema_momentum=0.9), 10, 2)
    assert opt.use_ema and opt.ema_momentum == 0.9


class Slowdown(keras.callbacks.Callback):
    """The simulated machine runs `factor` times slower during epoch `epoch` (0-based): a passing load."""

    def __init__(self, clock: Clock, epoch: int, factor: float):
        super().__init__()
        self.clock, self.epoch, self.factor, self.normal = clock, epoch, factor, clock.per_batch

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.per_batch = self.normal * (self.factor if epoch == self.epoch else 1.0)


def budget_run(monkeypatch, seconds_per_batch: float, fit_budget: bool = True, slowdown=None):
    from tests_support import tiny_data

    from nnlab.config.train import TrainerConfig
    from nnlab.models import build_model
    from nnlab.training import train

    clock = Clock(seconds_per_batch)
    monkeypatch.setattr(time, "perf_counter", clock)
    data = tiny_data()  # 64 rows: 4 batches of 16 an epoch
    model = build_model({"name": "mlp", "widths": [8]}, data.input_shape, data.task, data.num_classes)
    ticks = Ticks(clock)
    optimizer = AdamConfig(learning_rate=0.1, schedule=ScheduleConfig(name="cosine", fit_budget=fit_budget))
    trainer = TrainerConfig(epochs=20, batch_size=16, max_minutes=0.5, verbose=0, checkpoint=False)
    extra = [Slowdown(clock, *slowdown)] if slowdown else []
    result = train.train(model, data, trainer, optimizer, callbacks=[*extra, ticks])
    return result, ticks.rates


@pytest.mark.parametrize(("seconds_per_batch", "epochs"), [(2.5, 3), (2.0, 4), (0.5, 15)])
def test_with_a_time_budget_the_schedule_reaches_its_floor_when_the_budget_ends(monkeypatch, seconds_per_batch,
                                                                                 epochs):
    """A 30 s budget on a slow machine (10 s an epoch: 3 epochs fit), a less slow one (8 s: the budget ends
    3 batches into epoch 4) and a fast one (2 s: 15 of the 20 epochs fit): each run decays over the batches
    that fit, so all end near the floor."""
    result, rates = budget_run(monkeypatch, seconds_per_batch)
    assert result.epochs_run == epochs and result.stopped_by == "time_budget"
    assert rates[0] == pytest.approx(0.1)
    assert rates[-1] < 0.1 * 0.05  # the last batch trains at under 5% of the peak
    assert rates[len(rates) // 2] == pytest.approx(0.05, abs=0.015)  # half way: half the peak
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never climbs back


def test_a_passing_slowdown_speeds_the_decay_without_leaving_the_end_of_the_run_at_the_floor(monkeypatch):
    """0.5 s a batch, but 1.5 s in epoch 2: the plan shrinks while the machine is slow and grows back after.
    The decay follows the plan as it changes, so the rate still reaches the floor when the budget ends, and
    the batches trained after the machine recovered are not spent at the floor (as they were when progress
    was step / planned total and could not move back)."""
    result, rates = budget_run(monkeypatch, 0.5, slowdown=(1, 3.0))
    assert result.stopped_by == "time_budget" and result.epochs_run == 13  # 2 + 6 + 11 epochs of 2 s in 30 s
    assert rates[-1] < 0.1 * 0.05
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert sum(rate < 0.1 * 0.01 for rate in rates) <= 0.1 * len(rates)  # the floor: at most the last tenth
    assert rates[len(rates) // 2] > 0.1 * 0.2  # half way through, still a fifth of the peak or more


def test_without_fit_budget_the_schedule_plans_on_the_epoch_count(monkeypatch):
    result, rates = budget_run(monkeypatch, 2.5, fit_budget=False)
    assert result.epochs_run == 3
    assert rates[-1] > 0.09  # stopped by the budget at 3 of 20 planned epochs: barely decayed


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_a_learning_rate_set_mid_epoch_is_the_one_the_next_step_uses(backend, tmp_path):
    """Inside an epoch JAX carries the variables' values from step to step; Keras syncs them when a callback
    touches its model, which is what makes the assigned rate count at once."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (make backends installs JAX and PyTorch)")
    script = """
import keras, numpy as np
from nnlab.config.optim import ScheduleConfig
from nnlab.training.optim import DecaySchedule
x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
y = x.sum(1, keepdims=True)
def kernel_after(x, y, callbacks):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
    return keras.ops.convert_to_numpy(model.layers[0].kernel).ravel()
# Planned as a one-step run: batch 0 trains at the peak, batches 1-3 of the same epoch at the floor (0).
schedule = DecaySchedule(ScheduleConfig(name="linear"), 0.1, steps_per_epoch=1, first_epoch=0, epochs=1)
print(np.abs(kernel_after(x, y, [schedule]) - kernel_after(x[:16], y[:16], [])).max())
"""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 1e-6  # the same as one step on the first batch alone
