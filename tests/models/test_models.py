import keras
import pytest

from nnlab.errors import NnlabError
from nnlab.models import build_model


def mlp(**kw):
    cfg = {"name": "mlp", "widths": None, "depth": 2, "width": 16, "activation": "relu", "dropout": 0.0,
           "batch_norm": False, "l1": 0.0, "l2": 0.0, **kw}
    return build_model(cfg, (8, 8, 1), "classification", 10)


def cnn(**kw):
    cfg = {"name": "cnn", "blocks": [{"filters": 4, "kernel": 3, "convs": 1, "pool": "max", "dropout": 0.0}],
           "dense": [8], "activation": "relu", "batch_norm": False, "dropout": 0.0, "global_pool": False,
           "l2": 0.0, **kw}
    return build_model(cfg, (8, 8, 1), "classification", 3)


def test_mlp_depth_and_width():
    model = mlp()
    # 64*16+16 + 16*16+16 + 16*10+10
    assert model.count_params() == 1040 + 272 + 170
    assert model.output_shape == (None, 10)


def test_mlp_explicit_widths_win_over_depth():
    dense = [l for l in mlp(widths=[32, 8, 4]).layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [32, 8, 4, 10]


def test_mlp_batch_norm_dropout_and_regularizers():
    model = mlp(batch_norm=True, dropout=0.25, l2=1e-4)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds.count("BatchNormalization") == 2
    assert kinds.count("Dropout") == 2
    hidden = model.get_layer("hidden1_dense")
    assert hidden.use_bias is False and hidden.kernel_regularizer is not None


def test_head_is_softmax_for_classes_and_linear_for_regression():
    assert mlp().get_layer("head").activation.__name__ == "softmax"
    cfg = {"name": "mlp", "widths": [4]}
    reg = build_model(cfg, (3,), "regression", 0)
    assert reg.output_shape == (None, 1)
    assert reg.get_layer("head").activation.__name__ == "linear"


def test_cnn_blocks_shapes():
    model = cnn(blocks=[{"filters": 4, "convs": 2}, {"filters": 6, "pool": "avg", "dropout": 0.1}])
    assert model.get_layer("block1_conv2").output.shape[1:] == (8, 8, 4)
    assert model.get_layer("block2_pool").output.shape[1:] == (2, 2, 6)
    assert model.get_layer("features").output.shape[1:] == (24,)
    assert model.output_shape == (None, 3)


def test_cnn_global_pool_and_batch_norm():
    model = cnn(global_pool=True, batch_norm=True)
    assert model.get_layer("features").output.shape[1:] == (4,)
    assert model.get_layer("block1_conv1").use_bias is False


def test_cnn_rejects_an_unknown_pool():
    with pytest.raises(NnlabError, match="use max, avg or none"):
        cnn(blocks=[{"filters": 4, "pool": "median"}])


def test_unknown_model_name():
    with pytest.raises(NnlabError, match="did you mean 'mlp'"):
        build_model({"name": "mlpp"}, (4,), "classification", 2)
