import keras
import numpy as np
import pytest

import nnlab.models.resnet  # noqa: F401  (registration)
from nnlab.errors import NnlabError
from nnlab.models import build_model


def resnet(input_shape=(8, 8, 1), **kw):
    cfg = {"name": "resnet", "stages": [1, 1], "filters": [2, 4], "block": "basic", "stem_filters": 2,
           "stem_kernel": 3, "stem_stride": 1, "stem_pool": False, "width": 1.0, "dropout": 0.0, "l2": 0.0,
           **kw}
    return build_model(cfg, input_shape, "classification", 3)


def names(model):
    return [l.name for l in model.layers]


def test_parameter_count_by_hand():
    # Convs have no bias; each BN holds 4 vectors (gamma, beta, moving mean and variance).
    stem = 3 * 3 * 1 * 2 + 4 * 2
    stage1 = (3 * 3 * 2 * 2 + 4 * 2) * 2
    stage2 = (3 * 3 * 2 * 4 + 4 * 4) + (3 * 3 * 4 * 4 + 4 * 4) + (1 * 1 * 2 * 4 + 4 * 4)  # with projection
    head = 4 * 3 + 3
    assert resnet().count_params() == stem + stage1 + stage2 + head


def test_stages_downsample_after_the_first():
    model = resnet(input_shape=(9, 9, 1), stages=[2, 1, 1], filters=[2, 4, 4])
    assert model.get_layer("stage1_block2_out").output.shape[1:] == (9, 9, 2)
    assert model.get_layer("stage2_block1_out").output.shape[1:] == (5, 5, 4)
    assert model.get_layer("stage3_block1_out").output.shape[1:] == (3, 3, 4)
    assert model.get_layer("features").output.shape[1:] == (4,)
    assert model.output_shape == (None, 3)


def test_projection_only_where_the_shape_changes():
    model = resnet(stages=[2, 2, 1], filters=[2, 4, 4])
    projected = sorted(n.removesuffix("_proj_conv") for n in names(model) if n.endswith("_proj_conv"))
    # stage1_block1 keeps 2 channels at stride 1; stage3 keeps 4 channels but halves the resolution.
    assert projected == ["stage2_block1", "stage3_block1"]
    assert model.get_layer("stage2_block1_proj_conv").strides == (2, 2)


def test_stem_stride_and_pool():
    model = resnet(input_shape=(16, 16, 1), stem_stride=2, stem_pool=True)
    assert model.get_layer("stem_relu").output.shape[1:] == (8, 8, 2)
    assert model.get_layer("stem_pool").output.shape[1:] == (4, 4, 2)
    assert model.get_layer("features").output.shape[1:] == (4,)


def test_last_bn_of_each_branch_starts_at_zero_gamma():
    model = resnet()
    for block in ("stage1_block1", "stage2_block1"):
        assert not np.any(keras.ops.convert_to_numpy(model.get_layer(f"{block}_2_bn").gamma))
        assert np.all(keras.ops.convert_to_numpy(model.get_layer(f"{block}_1_bn").gamma) == 1)
    assert np.all(keras.ops.convert_to_numpy(model.get_layer("stage2_block1_proj_bn").gamma) == 1)


def test_zero_gamma_blocks_start_as_identity():
    # With every residual branch silenced, a block is relu(shortcut): stage 1 passes the stem through.
    model = resnet()
    outputs = [model.get_layer(name).output for name in ("stem_relu", "stage1_block1_out")]
    probe = keras.Model(model.input, outputs)
    stem, block = probe(np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block), keras.ops.convert_to_numpy(stem), atol=1e-6)


def test_bottleneck_expands_four_times():
    model = resnet(block="bottleneck", stages=[1, 1], filters=[2, 3])
    assert model.get_layer("stage1_block1_1_conv").kernel.shape == (1, 1, 2, 2)
    assert model.get_layer("stage1_block1_2_conv").kernel.shape == (3, 3, 2, 2)
    assert model.get_layer("stage1_block1_3_conv").kernel.shape == (1, 1, 2, 8)
    assert model.get_layer("stage2_block1_2_conv").strides == (2, 2)  # v1.5: the 3x3 conv downsamples
    assert model.get_layer("stage1_block1_proj_conv").kernel.shape == (1, 1, 2, 8)
    assert model.get_layer("features").output.shape[1:] == (12,)


def test_width_scales_stage_filters_not_the_stem():
    model = resnet(width=1.5, dropout=0.2, l2=1e-4)
    assert model.get_layer("stem_conv").filters == 2
    assert model.get_layer("stage1_block1_1_conv").filters == 3
    assert model.get_layer("stage2_block1_2_conv").filters == 6
    assert model.get_layer("features_drop").rate == 0.2
    assert model.get_layer("stem_conv").kernel_regularizer is not None


def test_defaults_on_fashion_mnist():
    model = build_model({"name": "resnet"}, (28, 28, 1), "classification", 10)
    assert model.get_layer("stage3_block2_out").output.shape[1:] == (7, 7, 128)
    assert model.output_shape == (None, 10)


def test_one_fit_step():
    model = resnet(block="bottleneck", stem_pool=True)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(np.ones((2, 8, 8, 1)), np.array([0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_unknown_block():
    with pytest.raises(NnlabError, match="Unknown resnet block 'bottelneck'.*did you mean 'bottleneck'"):
        resnet(block="bottelneck")


def test_stages_and_filters_must_match():
    with pytest.raises(NnlabError, match="model.stages has 3 entries but model.filters has 2"):
        resnet(stages=[1, 1, 1])
