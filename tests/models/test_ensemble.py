import keras
import numpy as np
import pytest

from nnlab.config.train import TrainerConfig
from nnlab.data import Data
from nnlab.errors import NnlabError
from nnlab.models import build_model, members
from nnlab.models.transfer import apply_trainable
from nnlab.training import train


def regressor(ensemble, **kw):
    cfg = {"name": "mlp", "widths": [6, 4], "dropout": 0.0, "ensemble": ensemble, **kw}
    return build_model(cfg, (3,), "regression", 0)


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)).astype("float32")
    return Data((x, y), None, (x, y), "regression")


def test_members_are_separate_sub_models_with_their_own_weights():
    model = regressor(3)
    parts = members(model)
    assert [m.name for m in parts] == ["member1", "member2", "member3"]
    assert model.count_params() == 3 * regressor(1).count_params()
    first, second = (keras.ops.convert_to_numpy(m.weights[0]) for m in parts[:2])
    assert not np.allclose(first, second)  # different initial weights: that is where the diversity starts
    single = regressor(1)
    assert members(single) == [single]


def test_prediction_is_the_mean_and_training_output_is_side_by_side():
    model = regressor(3)
    x = data().train[0][:5]
    alone = np.stack([keras.ops.convert_to_numpy(m(x)) for m in members(model)])
    assert np.allclose(keras.ops.convert_to_numpy(model(x)), alone.mean(axis=0), atol=1e-6)
    side = keras.ops.convert_to_numpy(model(x, training=True))
    assert side.shape == (5, 3) and np.allclose(side, alone[..., 0].T, atol=1e-6)


def test_the_training_loss_is_the_mean_of_the_members_losses():
    """Not the loss of the averaged prediction, which convexity makes smaller: each member learns alone."""
    model = regressor(3)
    x, y = data().train
    train.compile_model(model, keras.optimizers.SGD(0.0), "regression", TrainerConfig(), 0)
    loss = float(model.train_on_batch(x, train.column(model, y), return_dict=True)["loss"])
    own = [float(np.mean((keras.ops.convert_to_numpy(m(x))[:, 0] - y) ** 2)) for m in members(model)]
    of_mean = float(np.mean((keras.ops.convert_to_numpy(model(x))[:, 0] - y) ** 2))
    assert loss == pytest.approx(np.mean(own), rel=1e-4)
    assert of_mean < loss


def test_fit_and_evaluate_an_ensemble_log_what_averaging_gained():
    model = regressor(3)
    d = data()
    train.compile_model(model, keras.optimizers.Adam(0.02), "regression", TrainerConfig(), 0)
    result = train.fit(model, d, TrainerConfig(epochs=5, batch_size=8, verbose=0))
    assert result.history["loss"][-1] < result.history["loss"][0]
    metrics, predictions = train.evaluate(model, d, batch_size=8)
    assert predictions.shape == (48, 1)
    # |mean(p) - y| <= mean |p - y| row by row, so the ensemble is never worse than its average member.
    assert metrics["test_mae"] <= metrics["test_mae_members"] + 1e-6
    assert metrics["test_mae"] == pytest.approx(np.abs(predictions[:, 0] - d.test[1]).mean(), rel=1e-5)


def test_a_saved_ensemble_loads_and_predicts_the_same(tmp_path):
    model = regressor(2)
    x = data().train[0][:4]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert np.allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)


def test_two_classes_ensemble_and_many_classes_refuse():
    binary = build_model({"name": "mlp", "widths": [4], "ensemble": 2}, (3,), "classification", 2)
    assert binary.output_shape == (None, 1) and len(members(binary)) == 2
    with pytest.raises(NnlabError, match=r"model.ensemble=2 works for heads of one output unit \(regression, two "
                                         r"classes\); this classification head has 10: set model.ensemble=1"):
        build_model({"name": "mlp", "widths": [4], "ensemble": 2}, (3,), "classification", 10)
    with pytest.raises(NnlabError, match="model.ensemble=0: an ensemble needs 1 or more members"):
        regressor(0)


def test_budget_and_max_params_count_the_whole_ensemble():
    model = build_model({"name": "mlp", "depth": 2, "param_budget": 3000, "ensemble": 3}, (3,), "regression", 0)
    assert abs(model.count_params() - 3000) <= 150
    with pytest.raises(NnlabError, match="over model.max_params"):
        regressor(4, max_params=regressor(1).count_params() * 3)


def test_stages_freeze_every_member():
    model = regressor(2)
    apply_trainable(model, "none")
    for member in members(model):
        trainable = [layer.name for layer in member.layers if layer.trainable and layer.weights]
        assert trainable == ["head"]
