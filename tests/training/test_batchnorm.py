"""Precise batch norm (nnlab.training.batchnorm): moving statistics recomputed over training data for the trained
weights, when and where they are, the switch, the run's tag, and the warning for a model that scores far worse
at inference than while training."""

import dataclasses
import logging
import time

import keras
import numpy as np
import pytest
from tests_support import TRAINER, Clock, Ticks

from nnlab.config.optim import AdamConfig
from nnlab.config.train import EarlyStoppingConfig, TrainerConfig
from nnlab.data import Data
from nnlab.errors import ConfigError
from nnlab.tasks import get_task
from nnlab.training import batchnorm, train
from nnlab.training.batchnorm import gap_message, recompute, trainable_norms, unsettled
from nnlab.training.callbacks import TimeBudget


def stats(layer) -> tuple[np.ndarray, np.ndarray]:
    return keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance)


def in_batches(x: np.ndarray, size: int):
    return (x[i:i + size] for i in range(0, len(x), size))


def shifted(n=300, features=5, seed=0) -> np.ndarray:
    """Features far from batch norm's initial statistics (mean 0, variance 1): mean 3, variance 0.04."""
    return np.random.default_rng(seed).normal(3.0, 0.2, size=(n, features)).astype("float32")


def test_recompute_sets_the_moving_statistics_to_the_datas_mean_and_variance_so_inference_standardises():
    x = shifted()  # 300 rows in batches of 64: the last one partial, weighted by its size
    inputs = keras.Input((5,))
    norm = keras.layers.BatchNormalization()
    model = keras.Model(inputs, norm(keras.layers.Dropout(0.5)(inputs)))  # dropout stays off while measuring
    assert recompute(model, in_batches(x, 64)) == 300
    mean, variance = stats(norm)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance, x.var(axis=0), rtol=1e-4)
    out = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.var(axis=0), 1.0, atol=0.03)  # epsilon 0.001 against a variance of 0.04
    assert norm.momentum == 0.99 and "call" not in vars(norm)  # the layer is as it was


def test_recompute_reaches_nested_models_and_leaves_frozen_batch_norm_alone():
    inner_norm = keras.layers.BatchNormalization(name="inner_bn")
    inner_in = keras.Input((5,))
    inner = keras.Model(inner_in, inner_norm(inner_in), name="backbone")
    frozen = keras.layers.BatchNormalization(name="frozen_bn")
    inputs = keras.Input((5,))
    model = keras.Model(inputs, frozen(inner(inputs)))
    frozen.moving_mean.assign(np.full(5, 7.0, "float32"))
    frozen.moving_variance.assign(np.full(5, 3.0, "float32"))
    frozen.trainable = False
    assert trainable_norms(model) == [inner_norm]
    x = shifted()
    recompute(model, in_batches(x, 100))
    np.testing.assert_allclose(stats(inner_norm)[0], x.mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(stats(frozen)[0], 7.0)
    np.testing.assert_array_equal(stats(frozen)[1], 3.0)


def test_a_recompute_that_fails_midway_leaves_the_statistics_and_the_layer_as_they_were():
    inputs = keras.Input((5,))
    norm = keras.layers.BatchNormalization()
    model = keras.Model(inputs, norm(inputs))
    before = stats(norm)

    def failing():
        yield shifted(64)
        raise OSError("disk gone")

    with pytest.raises(OSError):
        recompute(model, failing())
    np.testing.assert_array_equal(stats(norm)[0], before[0])
    np.testing.assert_array_equal(stats(norm)[1], before[1])
    assert norm.momentum == 0.99 and "call" not in vars(norm)


def test_statistics_count_as_settled_once_their_start_weighs_under_a_thousandth():
    norm = keras.layers.BatchNormalization(momentum=0.99)
    assert unsettled([norm], 687) and not unsettled([norm], 688)  # 0.99 ** 688 < 0.001
    assert not unsettled([], 0)


# A small-data job: inputs far from mean 0 / variance 1 in two batches an epoch, so a few epochs leave the
# moving statistics near their start and inference normalises by the wrong ones.
def small_data(seed=0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 0.2, size=(320, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 6.0).astype("int64")
    return Data((x[:256], y[:256]), (x[256:], y[256:]), (x[256:], y[256:]), "classification", ["a", "b"])


def bn_model(data: Data, momentum: float = 0.99, lr: float = 0.02, ema: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn_in")(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn_hidden")(x)
    model = keras.Model(inputs, get_task(data.task).head(x, data.num_classes))
    train.compile_model(model, keras.optimizers.Adam(lr, use_ema=ema), data.task, TRAINER, data.num_classes)
    return model


SMALL = dataclasses.replace(TRAINER, epochs=4, batch_size=128)  # 8 updates: 0.99 ** 8 = 0.92 of the start left


def test_the_callback_recomputes_at_every_epoch_end_while_unsettled_and_never_once_settled():
    data = small_data()
    result = train.fit(bn_model(data), data, SMALL)
    assert result.bn_recomputes == 4
    assert train.fit(bn_model(data, momentum=0.01), data, SMALL).bn_recomputes == 0  # 0.01 ** 2 after epoch 1


def test_a_stage_resumed_after_enough_updates_counts_them_and_needs_no_recompute():
    data = small_data()
    resumed = batchnorm.PreciseBatchNorm(data.train[0], SMALL.batch_size)
    resumed.start_stage(updates=700)  # a checkpoint from late in the stage: 0.99 ** 700 < 0.001
    assert train.fit(bn_model(data), data, SMALL, precise=resumed).bn_recomputes == 0


def test_precise_bn_true_recomputes_every_epoch_even_when_settled():
    data = small_data()
    result = train.fit(bn_model(data, momentum=0.01), data, dataclasses.replace(SMALL, precise_bn=True))
    assert result.bn_recomputes == 4


def test_precise_bn_off_leaves_the_moving_statistics_where_training_left_them():
    data = small_data()
    off, auto = bn_model(data), bn_model(data)
    result = train.fit(off, data, dataclasses.replace(SMALL, precise_bn=False))
    train.fit(auto, data, SMALL)
    assert result.bn_recomputes == 0
    x = data.train[0]
    # Off: 0.99 ** 8 of the initial variance 1 is left; auto: the data's variance (0.04).
    assert stats(off.get_layer("bn_in"))[1] == pytest.approx(0.99 ** 8 + (1 - 0.99 ** 8) * 0.04, abs=0.01)
    np.testing.assert_allclose(stats(auto.get_layer("bn_in"))[1], x.var(axis=0), rtol=1e-4)


def test_validation_of_a_small_data_model_is_right_only_with_precise_bn():
    data = small_data()
    on = train.train(bn_model(data), data, SMALL, AdamConfig(learning_rate=0.02))
    off = train.train(bn_model(data), data, dataclasses.replace(SMALL, precise_bn=False),
                      AdamConfig(learning_rate=0.02))
    assert on.history["accuracy"] == pytest.approx(off.history["accuracy"])  # training itself is the same
    assert on.history["val_accuracy"][-1] >= 0.85
    assert off.history["val_accuracy"][-1] <= 0.7


def test_early_stopping_restores_the_best_weights_with_the_statistics_recomputed_for_them():
    data = small_data()
    model = bn_model(data)
    trainer = dataclasses.replace(SMALL, epochs=8, early_stopping=EarlyStoppingConfig(
        patience=2, monitor="val_loss", min_delta=0.0, restore_best_weights=True))
    result = train.fit(model, data, trainer)
    best = result.history["val_loss"][result.best_epoch - 1]
    assert model.evaluate(*data.val, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)


def test_the_weight_average_at_the_end_of_a_fit_gets_statistics_of_its_own():
    data = small_data()
    assert train.fit(bn_model(data, ema=True), data, SMALL).bn_recomputes == 5  # 4 epochs + the swap to the EMA


def test_a_recompute_is_epoch_end_time_for_the_budget_never_a_batchs(monkeypatch):
    clock = Clock(per_batch=5.0)
    monkeypatch.setattr(time, "perf_counter", clock)
    real = batchnorm.recompute

    def slow(*args, **kwargs):
        clock.now += 30.0
        return real(*args, **kwargs)

    monkeypatch.setattr(batchnorm, "recompute", slow)
    data = small_data()
    budget = TimeBudget(60.0)
    result = train.fit(bn_model(data), data, SMALL, callbacks=[Ticks(clock)], budget=budget)
    assert result.bn_recomputes == 4
    assert budget.step_seconds() == pytest.approx(5.0)  # a batch's time, not inflated by the recompute
    assert budget.tail == pytest.approx(30.0)  # held back for each epoch's end


def test_the_gap_rule_fires_on_a_model_closer_to_chance_at_inference_and_not_on_overfitting():
    assert gap_message("mean_iou", train=0.83, inference=0.06, chance=0.2, val=0.064) is not None
    assert "precise_bn=false" in gap_message("accuracy", 0.9, 0.5, 0.5, 0.5, precise_off=True)
    assert gap_message("accuracy", train=0.86, inference=0.5, chance=0.5) is not None  # two classes: chance 0.5
    assert gap_message("accuracy", train=0.99, inference=0.99, chance=0.1, val=0.60) is None  # overfitting
    assert gap_message("accuracy", train=0.90, inference=0.20, chance=0.1, val=0.85) is None  # validation is fine
    assert gap_message("accuracy", train=0.30, inference=0.10, chance=0.3) is None  # nothing learnt to lose
    assert gap_message("mae", train=0.1, inference=0.9, chance=1.0, val=0.95) is not None  # an error: lower is better
    assert gap_message("mae", train=0.1, inference=0.3, chance=1.0, val=0.6) is None
    assert gap_message("accuracy", train=float("nan"), inference=0.1, chance=0.1) is None


def test_the_gap_warning_fires_when_precise_bn_is_off_and_not_when_it_is_on(caplog):
    data = small_data()
    with caplog.at_level(logging.WARNING, logger="nnlab.training.batchnorm"):
        on = train.train(bn_model(data), data, SMALL, AdamConfig(learning_rate=0.02))
        assert on.warning is None and not caplog.records
        off = train.train(bn_model(data), data, dataclasses.replace(SMALL, precise_bn=False),
                          AdamConfig(learning_rate=0.02))
    assert off.warning is not None and "trainer.precise_bn=false" in off.warning
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "closer to chance" in record.getMessage()


def test_the_recompute_count_travels_with_a_checkpoints_state():
    result = train.FitResult({"loss": [1.0]}, 1.0, 1, "epochs", bn_recomputes=3)
    assert train.FitResult(**result.state()).bn_recomputes == 3
    later = train.FitResult({"loss": [0.5]}, 1.0, 1, "epochs", bn_recomputes=5)
    assert result.then(later).bn_recomputes == 5  # the count is cumulative


@pytest.mark.parametrize("value", ["auto", True, False])
def test_the_switch_takes_auto_true_or_false(value):
    assert TrainerConfig(precise_bn=value).precise_bn == value


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_any_other_switch_value_is_refused_in_one_sentence(value):
    with pytest.raises(ConfigError, match=r"trainer\.precise_bn=.* must be auto, true or false"):
        TrainerConfig(precise_bn=value)


def test_the_tag_says_what_was_done():
    data = small_data()
    model = bn_model(data)
    assert batchnorm.tag(False, 0, 256, model) == "off"
    assert batchnorm.tag("auto", 0, 256, model) == "not needed: settled"
    assert batchnorm.tag("auto", 3, 256, model) == "recomputed 3x over 256 training examples"
    for layer in trainable_norms(model):
        layer.trainable = False
    assert batchnorm.tag("auto", 0, 256, model) == "no trainable batch norm"


def test_a_small_data_segmentation_job_tags_its_run_with_the_recompute(store):
    from hydra import compose, initialize_config_module
    from mlflow.tracking import MlflowClient

    from nnlab.job import app

    overrides = [f"tracking.uri={store}", "tracking.experiment=bn", "trainer.verbose=0", "trainer.plot_model=false",
                 "trainer.save_model=false", "dataset=scenes", "dataset.count=40", "dataset.canvas_size=[16,16]",
                 "model=unet", "model.depth=2", "model.filters=4", "trainer.epochs=2", "trainer.batch_size=64"]
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        app.run(compose(config_name="config", overrides=overrides))
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("bn").experiment_id])
    train_rows = int(run.data.params["data.train_size"]) if "data.train_size" in run.data.params else None
    tag = run.data.tags["precise_bn"]
    assert tag.startswith("recomputed 2x over ") and tag.endswith(" training examples")
    if train_rows is not None:
        assert tag == f"recomputed 2x over {train_rows} training examples"
