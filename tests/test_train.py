import keras
import numpy as np
import pytest

from nnlab import train
from nnlab.data import Data
from nnlab.models import build_model

TRAINER = {"epochs": 3, "batch_size": 16, "max_minutes": None, "early_stopping": {"patience": None},
           "loss": None, "metrics": None, "mixed_precision": False, "jit_compile": None, "verbose": 0}


def tiny_data(n=64, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return Data((x, y), (x[:16], y[:16]), (x[:32], y[:32]), "classification", ["neg", "pos"])


def compiled(data, lr=0.01):
    model = build_model({"name": "mlp", "widths": [8]}, data.input_shape, data.task, data.num_classes)
    train.compile_model(model, keras.optimizers.Adam(lr), data.task, TRAINER)
    return model


def test_fit_runs_all_epochs_and_reports_the_best_one():
    data = tiny_data()
    result = train.fit(compiled(data), data, TRAINER)
    assert result.epochs_run == 3
    assert result.stopped_by == "epochs"
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.best_epoch == int(np.argmin(result.history["val_loss"])) + 1


def test_time_budget_stops_after_the_epoch_that_would_overrun(monkeypatch):
    clock = iter(range(0, 10_000, 40))  # every perf_counter() call advances 40 s
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    data = tiny_data()
    result = train.fit(compiled(data), data, {**TRAINER, "epochs": 50, "max_minutes": 3})
    assert result.stopped_by == "time_budget"
    assert 1 <= result.epochs_run < 50


def test_a_budget_reached_on_the_last_epoch_still_counts_as_all_epochs(monkeypatch):
    clock = iter(range(0, 10_000, 40))
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    data = tiny_data()
    result = train.fit(compiled(data), data, {**TRAINER, "epochs": 1, "max_minutes": 1})
    assert result.epochs_run == 1 and result.stopped_by == "epochs"


def test_early_stopping_restores_the_best_weights():
    data = tiny_data()
    x_val, y_val = data.val
    data.val = (x_val, 1 - y_val)  # flipped labels: validation loss rises while training improves
    model = compiled(data, lr=0.05)
    trainer = {**TRAINER, "epochs": 30, "early_stopping": {"patience": 2, "monitor": "val_loss",
                                                            "min_delta": 0.0, "restore_best_weights": True}}
    result = train.fit(model, data, trainer)
    assert result.stopped_by == "early_stopping"
    assert result.epochs_run < 30
    best = min(result.history["val_loss"])
    assert result.history["val_loss"][result.best_epoch - 1] == best
    assert model.evaluate(*data.val, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)


def test_mixed_precision_is_ignored_on_cpu_and_says_so():
    facts = train.setup_runtime(seed=0, mixed_precision=True)
    try:
        if facts["device"] == "CPU":
            assert facts["mixed_precision_effective"] is False
            assert keras.mixed_precision.dtype_policy().name == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_evaluate_returns_prefixed_metrics_and_probabilities():
    data = tiny_data()
    model = compiled(data)
    metrics, predictions = train.evaluate(model, data, batch_size=8)
    assert set(metrics) == {"test_loss", "test_accuracy"}
    assert predictions.shape == (32, 2)
    assert np.allclose(predictions.sum(axis=1), 1.0, atol=1e-5)


def test_regression_defaults_to_mse_with_mae_and_rmse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    y = x.sum(axis=1).astype("float32")
    data = Data((x, y), None, (x, y), "regression")
    model = build_model({"name": "mlp", "widths": [4]}, (3,), "regression", 0)
    train.compile_model(model, keras.optimizers.Adam(0.01), "regression", TRAINER)
    result = train.fit(model, data, {**TRAINER, "epochs": 2})
    assert {"loss", "mae", "rmse"} <= set(result.history)
    assert result.best_epoch is not None  # monitored on training loss when there is no validation split
