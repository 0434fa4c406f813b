import keras
import numpy as np
import pytest

import nnlab.models.alexnet  # noqa: F401  (registration)
from nnlab.errors import NnlabError
from nnlab.models import build_model


def alexnet(input_shape=(8, 8, 1), **kw):
    cfg = {"name": "alexnet", "filters": [2, 3], "kernels": [3, 1], "stem_stride": 1, "pool_after": [1],
           "dense": [4], "width": 1.0, "depth": 1, "batch_norm": False, "dropout": 0.0, "activation": "relu",
           "l2": 0.0, **kw}
    return build_model(cfg, input_shape, "classification", 3)


def convs(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]


def test_parameter_count_by_hand():
    # conv 3*3*1*2+2, conv 1*1*2*3+3, dense (4*4*3)*4+4, head 4*3+3
    assert alexnet().count_params() == 20 + 9 + 196 + 15


def test_parameter_count_with_batch_norm():
    # convs and dense lose their bias; each BN holds 4 vectors (gamma, beta, moving mean and variance)
    assert alexnet(batch_norm=True).count_params() == (18 + 8) + (6 + 12) + (192 + 16) + 15


def test_defaults_pool_fashion_mnist_28_14_7_4():
    model = build_model({"name": "alexnet"}, (28, 28, 1), "classification", 10)
    pooled = [model.get_layer(f"stage{i}_pool").output.shape[1:3] for i in (1, 2, 5)]
    assert pooled == [(14, 14), (7, 7), (4, 4)]
    assert model.get_layer("stage5_conv1").kernel.shape == (3, 3, 96, 64)
    assert model.get_layer("stage1_conv1").kernel.shape == (5, 5, 1, 32)
    assert model.get_layer("features").output.shape[1:] == (4 * 4 * 64,)
    assert [l.rate for l in model.layers if isinstance(l, keras.layers.Dropout)] == [0.5, 0.5]
    assert model.output_shape == (None, 10)


def test_stem_stride_and_pooling_shapes():
    model = alexnet(input_shape=(9, 9, 1), stem_stride=2, pool_after=[1, 2])
    assert model.get_layer("stage1_conv1").output.shape[1:] == (5, 5, 2)
    assert model.get_layer("stage1_pool").output.shape[1:] == (3, 3, 2)
    assert model.get_layer("stage2_pool").output.shape[1:] == (2, 2, 3)


def test_width_scales_filters_and_dense_units():
    model = alexnet(width=2.5)
    assert [l.filters for l in convs(model)] == [5, 8]  # round(2*2.5), round(3*2.5)
    assert model.get_layer("dense1_dense").units == 10
    assert [l.filters for l in convs(alexnet(width=0.1))] == [1, 1]


def test_depth_multiplies_conv_count_and_strides_only_once():
    model = alexnet(depth=3, stem_stride=2)
    assert len(convs(model)) == 6
    assert model.get_layer("stage2_conv3").filters == 3
    assert [model.get_layer(f"stage1_conv{j}").strides for j in (1, 2, 3)] == [(2, 2), (1, 1), (1, 1)]


def test_batch_norm_l2_and_one_fit_step():
    model = alexnet(batch_norm=True, dropout=0.5, l2=1e-4)
    assert model.get_layer("stage1_conv1").use_bias is False
    assert model.get_layer("stage1_conv1").kernel_regularizer is not None
    assert "stage2_bn1" in [l.name for l in model.layers]
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_filters_and_kernels_must_match():
    with pytest.raises(NnlabError, match=r"model.filters has 2 entries but model.kernels has 3"):
        alexnet(kernels=[3, 3, 3])


def test_pool_after_must_name_existing_stages():
    with pytest.raises(NnlabError, match=r"model.pool_after names stages \[0, 3\]"):
        alexnet(pool_after=[0, 1, 3])


def test_depth_must_be_positive():
    with pytest.raises(NnlabError, match="depth >= 1"):
        alexnet(depth=0)
