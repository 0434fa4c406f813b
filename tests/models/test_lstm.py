import keras
import numpy as np
import pytest

import nnlab.models.sequence  # noqa: F401  (registration)
from nnlab.errors import NnlabError
from nnlab.models import build_model


def lstm(input_shape=(5, 3), task="classification", **kw):
    cfg = {"name": "lstm", "units": [4], "cell": "lstm", "bidirectional": False, "dropout": 0.0,
           "recurrent_dropout": 0.0, "dense": [], "activation": "relu", **kw}
    return build_model(cfg, input_shape, task, 3)


def test_lstm_parameter_count_by_hand():
    # 4 gates of 4 units over [input 3 + state 4] plus bias; head 4*3+3
    assert lstm().count_params() == 4 * 4 * (3 + 4) + 4 * 4 + 15


def test_gru_has_three_gates():
    model = lstm(cell="gru")
    assert isinstance(model.get_layer("gru1"), keras.layers.GRU)
    # Keras' GRU (reset_after) keeps two bias vectors per gate.
    assert model.count_params() == 3 * 4 * (3 + 4) + 2 * 3 * 4 + 15


def test_only_the_last_layer_collapses_time():
    model = lstm(units=[6, 5, 4])
    assert model.get_layer("lstm1").output.shape[1:] == (5, 6)
    assert model.get_layer("lstm2").output.shape[1:] == (5, 5)
    assert model.get_layer("lstm3").output.shape[1:] == (4,)
    assert model.output_shape == (None, 3)


def test_bidirectional_doubles_features_and_parameters():
    model = lstm(bidirectional=True, units=[3, 4])
    assert model.get_layer("bidirectional1").output.shape[1:] == (5, 6)
    assert model.get_layer("bidirectional2").output.shape[1:] == (8,)
    one_way = lstm(units=[4]).count_params() - 15
    assert lstm(bidirectional=True).count_params() == 2 * one_way + 8 * 3 + 3


def test_dense_head_dropout_and_regression():
    model = lstm(task="regression", dense=[8, 4], dropout=0.2, recurrent_dropout=0.1, activation="tanh")
    assert model.get_layer("lstm1").dropout == 0.2
    assert model.get_layer("lstm1").recurrent_dropout == 0.1
    assert model.get_layer("dense2_dense").units == 4
    assert model.get_layer("dense1_drop").rate == 0.2
    assert model.output_shape == (None, 1)


def test_defaults_on_airline_windows_and_one_fit_step():
    model = build_model({"name": "lstm"}, (12, 1), "regression", 0)
    assert model.get_layer("lstm1").units == 64
    model.compile("adam", "mse")
    history = model.fit(np.zeros((4, 12, 1)), np.zeros(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unknown_cell():
    with pytest.raises(NnlabError, match="Unknown recurrent cell 'gur'.*did you mean 'gru'"):
        lstm(cell="gur")


def test_empty_units():
    with pytest.raises(NnlabError, match="model.units is empty"):
        lstm(units=[])


def test_images_are_rejected_with_a_hint():
    with pytest.raises(NnlabError, match=r"needs sequences \(steps, features\).*\(8, 8, 1\)"):
        lstm(input_shape=(8, 8, 1))
