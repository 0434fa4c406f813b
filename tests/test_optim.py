import keras
import pytest

from nnlab.errors import NnlabError
from nnlab.optim import build_optimizer, current_lr


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam), ("rmsprop", keras.optimizers.RMSprop),
     ("adamw", keras.optimizers.AdamW), ("nadam", keras.optimizers.Nadam)],
)
def test_each_optimizer_builds_with_its_learning_rate(name, cls):
    opt, callbacks = build_optimizer({"name": name, "learning_rate": 0.05, "schedule": {"name": "constant"},
                                      "clipnorm": None}, steps_per_epoch=10, epochs=3)
    assert isinstance(opt, cls)
    assert current_lr(opt) == pytest.approx(0.05)
    assert callbacks == []


def test_sgd_momentum_and_nesterov_reach_keras():
    opt, _ = build_optimizer({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True,
                              "schedule": {"name": "constant"}, "clipnorm": 1.0}, 10, 3)
    assert opt.momentum == 0.9 and opt.nesterov is True and opt.clipnorm == 1.0



def test_cosine_decays_to_alpha_over_the_whole_run():
    opt, _ = build_optimizer({"name": "adam", "learning_rate": 1.0, "schedule": {"name": "cosine", "alpha": 0.1}},
                             steps_per_epoch=10, epochs=5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(1.0)
    assert float(schedule(25)) == pytest.approx(0.55, abs=1e-3)
    assert float(schedule(50)) == pytest.approx(0.1, abs=1e-6)


def test_cosine_with_warmup_starts_low():
    opt, _ = build_optimizer({"name": "adam", "learning_rate": 1.0,
                              "schedule": {"name": "cosine", "warmup_epochs": 1}}, 10, 5)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(1.0)


def test_exponential_decays_once_per_epoch():
    opt, _ = build_optimizer({"name": "sgd", "learning_rate": 1.0,
                              "schedule": {"name": "exponential", "decay_rate": 0.5}}, 10, 5)
    assert float(opt._learning_rate(20)) == pytest.approx(0.25)


def test_plateau_is_a_callback():
    opt, callbacks = build_optimizer({"name": "adam", "learning_rate": 0.01,
                                      "schedule": {"name": "plateau", "factor": 0.2, "patience": 1}}, 10, 5)
    assert isinstance(callbacks[0], keras.callbacks.ReduceLROnPlateau)
    assert callbacks[0].factor == 0.2


def test_unknown_schedule_and_optimizer():
    with pytest.raises(NnlabError, match="did you mean 'cosine'"):
        build_optimizer({"name": "adam", "learning_rate": 0.1, "schedule": {"name": "cosin"}}, 10, 5)
    with pytest.raises(NnlabError, match="did you mean 'adam'"):
        build_optimizer({"name": "adma", "learning_rate": 0.1}, 10, 5)


def test_weight_averaging_is_passed_to_keras():
    opt, _ = build_optimizer({"name": "adam", "learning_rate": 1e-3, "use_ema": True, "ema_momentum": 0.9}, 10, 2)
    assert opt.use_ema and opt.ema_momentum == 0.9
