import dataclasses

import keras
import pytest

from nnlab.config.optim import (AdamConfig, AdamWConfig, NadamConfig, RMSpropConfig, ScheduleConfig,
                                SGDConfig)
from nnlab.errors import NnlabError
from nnlab.optim import build_optimizer, current_lr


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


def test_cosine_decays_to_alpha_over_the_whole_run():
    opt, _ = build_optimizer(AdamConfig(learning_rate=1.0, schedule=ScheduleConfig(name="cosine", alpha=0.1)),
                             steps_per_epoch=10, epochs=5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1.0)
    assert float(schedule(25)) == pytest.approx(0.55, abs=1e-3)
    assert float(schedule(50)) == pytest.approx(0.1, abs=1e-6)


def test_cosine_with_warmup_starts_low():
    opt, _ = build_optimizer(AdamConfig(learning_rate=1.0, schedule=ScheduleConfig(name="cosine", warmup_epochs=1)),
                             10, 5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(1.0)


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
