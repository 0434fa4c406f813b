import dataclasses

import keras
import numpy as np
import pytest
from tests_support import TRAINER, compiled, tiny_data

from nnlab.config.optim import AdamConfig
from nnlab.config.train import EarlyStoppingConfig, StageConfig
from nnlab.data import Data
from nnlab.errors import NnlabError
from nnlab.models import build_model
from nnlab.tasks import get_task
from nnlab.training import runtime, train


def test_fit_runs_all_epochs_and_reports_the_best_one():
    data = tiny_data()
    result = train.fit(compiled(data), data, TRAINER)
    assert result.epochs_run == 3
    assert result.stopped_by == "epochs"
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.best_epoch == int(np.argmin(result.history["val_loss"])) + 1


def test_time_budget_stops_before_the_run_would_overrun(monkeypatch):
    clock = iter(range(0, 10_000, 40))  # every perf_counter() call advances 40 s
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    data = tiny_data()
    result = train.fit(compiled(data), data, dataclasses.replace(TRAINER, epochs=50, max_minutes=3))
    assert result.stopped_by == "time_budget"
    assert 1 <= result.epochs_run < 50


def test_early_stopping_restores_the_best_weights():
    data = tiny_data()
    x_val, y_val = data.val
    data.val = (x_val, 1 - y_val)  # flipped labels: validation loss rises while training improves
    model = compiled(data, lr=0.05)
    trainer = dataclasses.replace(TRAINER, epochs=30, early_stopping=EarlyStoppingConfig(
        patience=2, monitor="val_loss", min_delta=0.0, restore_best_weights=True))
    result = train.fit(model, data, trainer)
    assert result.stopped_by == "early_stopping"
    assert result.epochs_run < 30
    best = min(result.history["val_loss"])
    assert result.history["val_loss"][result.best_epoch - 1] == best
    assert model.evaluate(*data.val, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)


def test_mixed_precision_is_ignored_on_a_cpu_without_bfloat16_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "cpu_has_bfloat16", lambda: False)
    facts = runtime.setup_runtime(seed=0, mixed_precision=True)
    try:
        if facts["device"] == "CPU":
            assert facts["mixed_precision_effective"] is False and facts["dtype_policy"] == "float32"
            assert keras.mixed_precision.dtype_policy().name == "float32"
            assert "trainer.mixed_precision=true ignored" in caplog.text
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_mixed_precision_computes_in_bfloat16_on_a_cpu_that_has_it(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_bfloat16", lambda: True)
    facts = runtime.setup_runtime(seed=0, mixed_precision=True)
    try:
        if facts["device"] == "CPU" and facts["backend"] == "tensorflow":
            assert facts["mixed_precision_effective"] is True and facts["dtype_policy"] == "mixed_bfloat16"
            assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
        assert runtime.setup_runtime(seed=0, mixed_precision=False)["dtype_policy"] == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_bfloat16_support_is_read_from_the_cpus_flags(tmp_path):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert runtime.cpu_has_bfloat16(str(with_bf16)) and not runtime.cpu_has_bfloat16(str(without))
    assert not runtime.cpu_has_bfloat16(str(tmp_path / "missing"))


def test_threads_limit_the_backend_in_a_fresh_process():
    """Set before the runtime starts (a fresh job process); later calls in the same process keep the first value."""
    import os
    import subprocess
    import sys

    code = ("from nnlab.training import runtime; runtime.setup_runtime(0, False, threads=1); import tensorflow as tf; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]


def test_evaluate_returns_prefixed_metrics_and_probabilities():
    data = tiny_data(classes=3)
    model = compiled(data)
    metrics, predictions = train.evaluate(model, data, batch_size=8)
    assert set(metrics) == {"test_loss", "test_accuracy"}
    assert predictions.shape == (32, 3)
    assert np.allclose(predictions.sum(axis=1), 1.0, atol=1e-5)


def test_regression_defaults_to_mse_with_mae_and_rmse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = x.sum(axis=1).astype("float32")
    data = Data((x, y), None, (x, y), "regression")
    model = build_model({"name": "mlp", "widths": [4]}, (3,), "regression", 0)
    train.compile_model(model, keras.optimizers.Adam(0.01), "regression", TRAINER, 0)
    result = train.fit(model, data, dataclasses.replace(TRAINER, epochs=2))
    assert {"loss", "mae", "rmse"} <= set(result.history)
    assert result.best_epoch is not None  # monitored on training loss when there is no validation split


def test_two_classes_train_one_sigmoid_unit_with_binary_cross_entropy():
    data = tiny_data(classes=2)
    model = compiled(data, lr=0.05)
    assert model.loss == "binary_crossentropy"
    result = train.fit(model, data, dataclasses.replace(TRAINER, epochs=8))
    assert result.history["accuracy"][-1] > 0.8  # the label is the sign of feature 0: easy to learn
    metrics, predictions = train.evaluate(model, data, batch_size=8)
    assert predictions.shape == (32, 1) and 0.0 <= predictions.min() and predictions.max() <= 1.0
    assert metrics["test_accuracy"] > 0.8


def regression_data(baselines=None, target_scale=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = x.sum(axis=1).astype("float32")
    return Data((x, y), None, (x, y), "regression", target_scale=target_scale, baselines=baselines or {})


@pytest.mark.parametrize("loss, options", [("mse", None), ("mae", None), ("huber", {"delta": 0.5}),
                                           ("log_cosh", None), ("logcosh", None)])
def test_regression_losses_by_name_with_options(loss, options):
    data = regression_data()
    model = build_model({"name": "mlp", "widths": [4]}, (3,), "regression", 0)
    trainer = dataclasses.replace(TRAINER, loss=loss, loss_options=options or {}, metrics=["mae", "mse", "rmse"])
    train.compile_model(model, keras.optimizers.Adam(0.01), "regression", trainer, 0)
    result = train.fit(model, data, dataclasses.replace(trainer, epochs=1))
    assert {"loss", "mae", "mse", "rmse"} <= set(result.history)
    if options:
        assert model.loss._fn_kwargs == {"delta": 0.5}


def test_unknown_loss_and_metric_names_get_the_closest_match():
    with pytest.raises(NnlabError, match="did you mean 'huber'"):
        get_task("regression").loss("hubber", None, 0)
    with pytest.raises(NnlabError, match="loss_options .* do not fit loss 'huber'"):
        get_task("regression").loss("huber", {"width": 2}, 0)
    with pytest.raises(NnlabError, match="did you mean 'rmse'"):
        get_task("regression").metric("rmsee", 0)


def test_evaluate_scores_the_baselines_in_scaled_and_original_units():
    data = regression_data(target_scale=(100.0, 10.0))
    data.baselines = {"zero": np.zeros_like(data.test[1])}
    model = build_model({"name": "mlp", "widths": [4]}, (3,), "regression", 0)
    train.compile_model(model, keras.optimizers.Adam(0.01), "regression", TRAINER, 0)
    metrics, predictions = train.evaluate(model, data, batch_size=8)
    y = data.test[1]
    assert metrics["test_mae_zero"] == pytest.approx(np.abs(y).mean(), rel=1e-6)
    assert metrics["test_rmse_original_zero"] == pytest.approx(10 * np.sqrt((y**2).mean()), rel=1e-6)
    own = np.abs(predictions.reshape(-1) - y).mean()
    assert metrics["test_mae"] == pytest.approx(own, rel=1e-5)
    assert metrics["test_mae_original"] == pytest.approx(10 * own, rel=1e-5)


class TrainableCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.counts, self.lrs = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.counts.append(len(self.model.trainable_weights))
        self.lrs.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_stages_refreeze_recompile_and_continue_the_epoch_count():
    data = tiny_data()
    model = build_model({"name": "mlp", "widths": [8, 8]}, data.input_shape, data.task, data.num_classes)
    hidden = model.get_layer("hidden1_dense")
    before = keras.ops.convert_to_numpy(hidden.kernel).copy()
    stages = [StageConfig(epochs=2, trainable="none", learning_rate=0.01),
              StageConfig(epochs=3, trainable="all", learning_rate=0.001)]
    counter = TrainableCounter()
    result = train.train(model, data, dataclasses.replace(TRAINER, stages=stages), AdamConfig(learning_rate=0.1),
                         callbacks=[counter])
    assert result.epochs_run == 5 and result.stage_starts == [3]
    assert len(result.history["loss"]) == 5
    assert counter.counts == [2, 2, 6, 6, 6]  # head kernel+bias, then every dense layer
    assert counter.lrs == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.001])
    assert not np.allclose(before, keras.ops.convert_to_numpy(hidden.kernel))  # moved only in stage 2


def test_time_budget_spans_all_stages(monkeypatch):
    clock = iter(range(0, 10_000, 40))
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    data = tiny_data()
    model = build_model({"name": "mlp", "widths": [8]}, data.input_shape, data.task, data.num_classes)
    stages = [StageConfig(epochs=20, trainable="none"), StageConfig(epochs=20, trainable="all")]
    result = train.train(model, data, dataclasses.replace(TRAINER, stages=stages, max_minutes=3),
                         AdamConfig(learning_rate=0.01))
    assert result.stopped_by == "time_budget"
    assert result.epochs_run < 20 and result.stage_starts == []  # stopped in stage 1: stage 2 never ran


def test_a_budget_spent_on_a_stages_last_epoch_starts_no_further_stage(monkeypatch):
    """The budget runs out exactly as stage 1 ends: stage 2 must not start (it used to, for one more epoch)."""
    from nnlab.training.callbacks import TimeBudget

    def out_of_time_after_epoch_2(self, epoch, logs=None):
        if epoch + 1 == 2:
            self.stopped, self.model.stop_training = True, True

    monkeypatch.setattr(TimeBudget, "on_epoch_end", out_of_time_after_epoch_2)
    data = tiny_data()
    model = build_model({"name": "mlp", "widths": [8]}, data.input_shape, data.task, data.num_classes)
    stages = [StageConfig(epochs=2, trainable="none"), StageConfig(epochs=3, trainable="all")]
    result = train.train(model, data, dataclasses.replace(TRAINER, stages=stages, max_minutes=5),
                         AdamConfig(learning_rate=0.01))
    assert result.epochs_run == 2 and result.stage_starts == []
    assert result.stopped_by == "time_budget"



class StageStarts(keras.callbacks.Callback):
    """The optimizer's step count as each fit (a stage, or the rest of one after a resume) begins."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.iterations, self.stop_after = [], stop_after

    def on_train_begin(self, logs=None):
        self.iterations.append(int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.stop_after:  # after the epoch's checkpoint: the caller's callbacks run last
            raise KeyboardInterrupt


def two_stage_run(data, checkpoint_dir, trainable=("none", "all"), stop_after=None, resume=False):
    """A fresh seeded model trained 2 epochs in each of two stages (interrupted after `stop_after` epochs, or
    resumed from its checkpoint): (final weights, StageStarts)."""
    from nnlab.training.callbacks import load_checkpoint

    keras.utils.set_random_seed(0)
    model = build_model({"name": "mlp", "widths": [8, 8]}, data.input_shape, data.task, data.num_classes)
    stages = [StageConfig(epochs=2, trainable=trainable[0], learning_rate=0.01),
              StageConfig(epochs=2, trainable=trainable[1], learning_rate=0.005)]
    starts = StageStarts(stop_after)
    state = None
    if resume:
        state, weights = load_checkpoint(checkpoint_dir)
        state = {**state, "weights": str(weights)}
    try:
        train.train(model, data, dataclasses.replace(TRAINER, stages=stages), AdamConfig(learning_rate=0.1),
                    callbacks=[starts], checkpoint_dir=str(checkpoint_dir), resume=state)
    except KeyboardInterrupt:
        pass
    return [keras.ops.convert_to_numpy(w) for w in model.weights], starts


@pytest.mark.parametrize("trainable", [("none", "all"), ("all", "all")], ids=["unfreezing", "same-layers"])
def test_resuming_at_a_stage_boundary_starts_the_next_stage_with_a_fresh_optimizer(tmp_path, trainable, recwarn):
    """Interrupted right after stage 1's last epoch: stage 2 gets stage 1's weights and a new optimizer (step 0,
    no moments of stage 1's), so the resumed run ends where the uninterrupted one does."""
    data = tiny_data()
    whole, uninterrupted = two_stage_run(data, tmp_path / "whole", trainable)
    two_stage_run(data, tmp_path / "cut", trainable, stop_after=2)
    resumed, after_resume = two_stage_run(data, tmp_path / "cut", trainable, resume=True)
    assert uninterrupted.iterations == [0, 0]
    assert after_resume.iterations == [0]  # stage 2 only, from step 0
    for a, b in zip(whole, resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not [w for w in recwarn if "optimizer" in str(w.message)]  # no stage-1 state was tried on stage 2


def test_resuming_within_a_stage_restores_its_optimizer_step_count(tmp_path):
    data = tiny_data()
    two_stage_run(data, tmp_path / "cut", stop_after=3)
    _, after_resume = two_stage_run(data, tmp_path / "cut", resume=True)
    assert after_resume.iterations == [4]  # stage 2's first epoch: 64 rows in batches of 16
