"""The U-Net builder: shapes, filter counts, options, backbone skips, weights from files, one training step."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest

from nnlab.config.models import ModelConfig, TransferConfig, UNetConfig
from nnlab.errors import NnlabError
from nnlab.models import MODELS

SMALL = {"filters": 4, "depth": 2}
MOBILENET = {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}}


def schema_kwargs(schema) -> dict:
    """The builder's keyword arguments as the config's defaults (the builder itself has none)."""
    common = {f.name for f in dataclasses.fields(ModelConfig)}
    return {k: v for k, v in dataclasses.asdict(schema()).items() if k not in common}


def body(shape=(32, 32, 3), **kw) -> keras.Model:
    """The U-Net body alone: input -> features (the segmentation head comes from the task)."""
    inputs = keras.Input(shape)
    features = MODELS.get("unet")(inputs, **(schema_kwargs(UNetConfig) | SMALL | kw))
    return keras.Model(inputs, features)


def layers_of(model, kind):
    return [layer for layer in model.layers if type(layer) is kind]


def numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def test_config_fields_are_the_builders_keyword_arguments_which_have_no_defaults():
    params = inspect.signature(MODELS.get("unet")).parameters
    common = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = {f.name for f in dataclasses.fields(UNetConfig)} - common
    assert set(params) - {"x"} == fields
    for name, param in params.items():
        if name != "x":
            assert param.kind is inspect.Parameter.KEYWORD_ONLY, name
            assert param.default is inspect.Parameter.empty, f"{name} has a default outside UNetConfig"
    assert UNetConfig().depth == 4 and UNetConfig().filters == 16 and isinstance(UNetConfig().width, float)


@pytest.mark.parametrize("shape", [(32, 32, 3), (16, 16, 1), (16, 32, 1)])
def test_output_keeps_the_input_height_and_width(shape):
    model = body(shape)
    assert model.output_shape == (None, shape[0], shape[1], 4)


def test_filters_double_per_level_down_to_the_bottleneck_and_back():
    model = body(depth=3)
    filters = {layer.name: layer.filters for layer in layers_of(model, keras.layers.Conv2D)}
    assert [filters[f"enc{level}_conv1"] for level in range(3)] == [4, 8, 16]
    assert filters["bottleneck_conv1"] == filters["bottleneck_conv2"] == 32
    assert [filters[f"dec{level}_conv2"] for level in (2, 1, 0)] == [16, 8, 4]
    assert model.get_layer("enc1_conv1").output.shape[1:3] == (16, 16)
    assert model.get_layer("bottleneck_conv1").output.shape[1:3] == (4, 4)


def test_width_scales_filters_and_the_parameter_count_monotonically():
    counts = [body(width=width).count_params() for width in (0.5, 1.0, 1.5, 2.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert body(width=2.0).get_layer("enc0_conv1").filters == 8


def test_transpose_and_bilinear_upsampling_build_with_different_layers():
    transpose, bilinear = body(upsampling="transpose"), body(upsampling="bilinear")
    assert len(layers_of(transpose, keras.layers.Conv2DTranspose)) == 2
    assert not layers_of(transpose, keras.layers.UpSampling2D)
    resizes = layers_of(bilinear, keras.layers.UpSampling2D)
    assert len(resizes) == 2 and all(layer.interpolation == "bilinear" for layer in resizes)
    assert not layers_of(bilinear, keras.layers.Conv2DTranspose)
    assert bilinear.output_shape == transpose.output_shape == (None, 32, 32, 4)


def test_unknown_upsampling_is_one_sentence_with_a_suggestion():
    with pytest.raises(NnlabError, match="Unknown model.upsampling 'bilinar'.*did you mean 'bilinear'"):
        body(upsampling="bilinar")


def test_batch_norm_follows_every_conv_and_dropout_the_bottleneck_and_decoder_blocks():
    # depth 2, two convs per block: 2 encoder blocks + bottleneck + 2 decoder blocks = 10 convs.
    assert len(layers_of(body(batch_norm=True), keras.layers.BatchNormalization)) == 10
    assert not layers_of(body(batch_norm=False), keras.layers.BatchNormalization)
    assert not layers_of(body(dropout=0.0), keras.layers.Dropout)
    dropped = layers_of(body(dropout=0.3), keras.layers.Dropout)
    assert [layer.name for layer in dropped] == ["bottleneck_drop", "dec1_drop", "dec0_drop"]
    assert all(layer.rate == 0.3 for layer in dropped)


def test_batch_norm_makes_the_convs_drop_their_redundant_bias():
    assert not body(batch_norm=True).get_layer("enc0_conv1").use_bias
    assert body(batch_norm=False).get_layer("enc0_conv1").use_bias


def test_sides_not_divisible_by_two_to_the_depth_fail_with_one_sentence():
    with pytest.raises(NnlabError, match=r"^model.depth=4 needs image sides divisible by 16; the images are 30x30: "
                                         r"resize them \(dataset.image_size\) or lower the depth.$"):
        body((30, 30, 3), depth=4)
    with pytest.raises(NnlabError, match="model.depth=5 needs image sides divisible by 32; the images are 16x16"):
        body((16, 16, 1), depth=5)
    with pytest.raises(NnlabError, match="needs image sides divisible by 4; the images are 30x30"):
        body((30, 30, 3), **MOBILENET)


def test_bad_depth_filters_and_weights_without_a_backbone_fail_with_one_sentence():
    with pytest.raises(NnlabError, match=r"model.depth=0: a U-Net needs depth >= 1"):
        body(depth=0)
    with pytest.raises(NnlabError, match="width > 0"):
        body(width=0.0)
    with pytest.raises(NnlabError, match="needs model.backbone"):
        body(weights="imagenet")


def test_backbone_builds_as_one_nested_model_and_keeps_height_and_width():
    model = body(**MOBILENET)
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras.Model)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.Model)] == ["backbone"]
    assert model.output_shape == (None, 32, 32, 4)


def test_backbone_skips_are_its_last_layers_at_each_halved_resolution():
    backbone = body(depth=3, **MOBILENET).get_layer("backbone")
    assert [tuple(out.shape[1:3]) for out in backbone.outputs] == [(16, 16), (8, 8), (4, 4)]
    # MobileNetV2's expansions just before each stride-2 block (the blocks' padding has odd sizes).
    names = [out._keras_history[0].name for out in backbone.outputs]
    assert names == ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu"]
    # Cut after the deepest skip: block_6 onwards (the stride-2 depthwise) is not part of the encoder.
    assert "block_6_depthwise" not in [layer.name for layer in backbone.layers]


def test_backbone_skips_are_never_padding_layers_even_when_their_size_matches():
    # ResNet50V2 pads its deepest 2x2 maps of 64 px images to 4x4, the size of the level above.
    backbone = body((64, 64, 3), depth=4, backbone="ResNet50V2").get_layer("backbone")
    names = [out._keras_history[0].name for out in backbone.outputs]
    assert names == ["conv1_conv", "conv2_block3_1_relu", "conv3_block4_1_relu", "conv4_block6_1_relu"]


def test_backbone_without_a_half_resolution_layer_upsamples_that_level_without_a_skip():
    # ConvNeXt's 4x4 stride-4 stem goes straight to H/4.
    model = body(depth=2, backbone="ConvNeXtTiny")
    assert [tuple(out.shape[1:3]) for out in model.get_layer("backbone").outputs] == [(8, 8)]
    names = [layer.name for layer in model.layers]
    assert "dec1_concat" not in names and "dec0_concat" not in names
    assert model.output_shape == (None, 32, 32, 4)


def test_depth_beyond_the_backbone_fails_with_one_sentence():
    with pytest.raises(NnlabError, match=r"model.backbone=MobileNetV2 reaches 1/32 of the 64x64 images at most but "
                                         r"model.depth=6 needs 1/64; set model.depth=5 or less"):
        body((64, 64, 3), depth=6, **MOBILENET)


def test_backbone_weights_load_from_a_unet_file_nnlab_saved(tmp_path):
    keras.utils.set_random_seed(1)
    source = body(**MOBILENET)
    path = tmp_path / "m.keras"
    source.save(path)
    keras.utils.set_random_seed(2)
    target = body(weights=str(path), **MOBILENET)
    pairs = list(zip(source.get_layer("backbone").weights, target.get_layer("backbone").weights, strict=True))
    for a, b in pairs:
        np.testing.assert_array_equal(numpy(a), numpy(b))
    scratch = body(**MOBILENET)
    assert not np.allclose(numpy(scratch.get_layer("backbone").weights[0]), numpy(pairs[0][1]))


def test_backbone_weights_load_from_a_transfer_model_file(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    transfer = keras.Model(inputs, MODELS.get("transfer")(inputs, **(schema_kwargs(TransferConfig) | MOBILENET)))
    path = tmp_path / "transfer.keras"
    transfer.save(path)
    target = body(weights=str(path), **MOBILENET).get_layer("backbone")
    whole = {w.path: numpy(w) for w in transfer.get_layer("backbone").weights}
    assert len(whole) > len(target.weights)  # the U-Net keeps only the layers down to its deepest skip
    for w in target.weights:
        np.testing.assert_array_equal(numpy(w), whole[w.path])


def test_backbone_weights_load_from_weights_h5_files_of_the_unet_encoder_or_a_whole_backbone(tmp_path):
    inputs = keras.Input((32, 32, 3))
    transfer = keras.Model(inputs, MODELS.get("transfer")(inputs, **(schema_kwargs(TransferConfig) | MOBILENET)))
    for source in (body(**MOBILENET), transfer):
        path = tmp_path / f"{source.name}.weights.h5"
        source.get_layer("backbone").save_weights(path)
        whole = {w.path: numpy(w) for w in source.get_layer("backbone").weights}
        for w in body(weights=str(path), **MOBILENET).get_layer("backbone").weights:
            np.testing.assert_array_equal(numpy(w), whole[w.path])


def test_weights_of_another_depth_fail_with_one_sentence(tmp_path):
    path = tmp_path / "m.keras"
    body(depth=2, **MOBILENET).save(path)
    with pytest.raises(NnlabError, match="fit neither the whole MobileNetV2 nor this U-Net's encoder"):
        body(depth=3, weights=str(path), **MOBILENET)


def moving_mean_changes(model) -> bool:
    """Whether one training-mode call moves the backbone's first batch-norm statistics."""
    bn = layers_of(model.get_layer("backbone"), keras.layers.BatchNormalization)[0]
    before = numpy(bn.moving_mean).copy()
    model(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32"), training=True)
    return not np.allclose(before, numpy(bn.moving_mean))


def test_backbone_from_scratch_learns_batch_norm_statistics_with_a_faster_momentum():
    model = body(**MOBILENET)
    norms = layers_of(model.get_layer("backbone"), keras.layers.BatchNormalization)
    assert norms and all(layer.momentum == 0.99 for layer in norms)
    assert moving_mean_changes(model)


def test_loaded_weights_freeze_the_backbone_batch_norm_statistics(tmp_path):
    path = tmp_path / "m.keras"
    body(**MOBILENET).save(path)
    assert not moving_mean_changes(body(weights=str(path), **MOBILENET))


def test_unet_body_with_a_softmax_head_trains_one_step_to_a_finite_loss():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    features = MODELS.get("unet")(inputs, **(schema_kwargs(UNetConfig) | SMALL | {"dropout": 0.1}))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax", name="head")(features)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 3, size=(4, 16, 16)).astype("int32")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert model.output_shape == (None, 16, 16, 3)
    assert np.isfinite(history.history["loss"][0])
