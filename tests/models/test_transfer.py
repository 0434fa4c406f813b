"""The transfer builder: backbones, weights from files nnlab saved, freezing, and preprocessing."""

import keras
import numpy as np
import pytest

from nnlab.errors import NnlabError
from nnlab.models import build_model
from nnlab.models.transfer import apply_trainable, preprocess_mode, set_trainable

SMALL = {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}}


def transfer(shape=(32, 32, 3), task="classification", classes=3, **kw):
    return build_model({"name": "transfer", **SMALL, **kw}, shape, task, classes)


def test_backbone_is_a_nested_model_under_a_pooled_head():
    model = transfer(dense=[16])
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, keras.Model)
    assert model.get_layer("features").output.shape[1:] == (backbone.output.shape[-1],)
    assert model.output_shape == (None, 3)


def test_trainable_none_freezes_the_whole_backbone_but_not_the_head():
    model = transfer(trainable="none", dense=[16])
    assert model.get_layer("backbone").trainable_weights == []
    assert len(model.trainable_weights) == 4  # dense1 kernel+bias, head kernel+bias


def test_trainable_top_n_and_prefixes():
    model = transfer(trainable=5)
    layers = model.get_layer("backbone").layers
    assert [layer.trainable for layer in layers[-5:]] == [True] * 5
    assert not any(layer.trainable for layer in layers[:-5])
    set_trainable(model.get_layer("backbone"), ["block_16", "Conv_1"])
    names = [layer.name for layer in layers if layer.trainable]
    assert names and all(n.startswith(("block_16", "Conv_1")) for n in names)


def test_bad_trainable_specs_say_what_is_allowed():
    model = transfer()
    with pytest.raises(NnlabError, match="No layer of 'backbone' starts with"):
        set_trainable(model.get_layer("backbone"), ["conv9_"])
    with pytest.raises(NnlabError, match="use all, none, a positive number"):
        set_trainable(model.get_layer("backbone"), "half")


def test_apply_trainable_without_a_backbone_keeps_the_head_trainable():
    model = build_model({"name": "mlp", "widths": [4, 4]}, (3,), "classification", 3)
    apply_trainable(model, "none")
    assert [w.path for w in model.trainable_weights] == ["head/kernel", "head/bias"]
    apply_trainable(model, 2)  # the last two layers: hidden2's activation and the head
    assert model.get_layer("hidden2_act").trainable and not model.get_layer("hidden2_dense").trainable


def test_weights_from_a_model_nnlab_saved_are_copied_into_the_backbone(tmp_path):
    keras.utils.set_random_seed(1)
    source = transfer(shape=(40, 40, 3), classes=5)  # pretrained elsewhere: other classes, other size
    path = tmp_path / "pretrained.keras"
    source.save(path)
    keras.utils.set_random_seed(2)
    target = transfer(shape=(32, 32, 3), task="classification", classes=2, weights=str(path), trainable="none")
    for a, b in zip(source.get_layer("backbone").weights, target.get_layer("backbone").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    scratch = transfer(shape=(32, 32, 3), classes=2)
    first = scratch.get_layer("backbone").weights[0]
    assert not np.allclose(keras.ops.convert_to_numpy(first),
                           keras.ops.convert_to_numpy(target.get_layer("backbone").weights[0]))


def test_weights_file_of_a_bare_backbone_and_h5(tmp_path):
    source = transfer()
    backbone_file = tmp_path / "backbone.weights.h5"
    source.get_layer("backbone").save_weights(backbone_file)
    h5 = tmp_path / "model.h5"
    source.save(h5)
    for path in (backbone_file, h5):
        target = transfer(weights=str(path))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(source.get_layer("backbone").weights[-1]),
                                      keras.ops.convert_to_numpy(target.get_layer("backbone").weights[-1]))


def test_weights_that_do_not_fit_or_do_not_exist(tmp_path):
    path = tmp_path / "other.keras"
    transfer(backbone_kwargs={"alpha": 0.5}).save(path)
    with pytest.raises(NnlabError, match="do not fit this backbone"):
        transfer(weights=str(path))
    with pytest.raises(NnlabError, match="does not exist"):
        transfer(weights=str(tmp_path / "missing.keras"))


def moving_mean_moves(model) -> bool:
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    bn = next(l for l in model.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization))
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    model(x, training=True)
    return not np.allclose(before, keras.ops.convert_to_numpy(bn.moving_mean))


def test_batch_norm_learns_from_scratch_and_stays_frozen_through_stages_with_loaded_weights(tmp_path):
    scratch = transfer(weights=None)
    assert moving_mean_moves(scratch)  # from scratch: batch norm learns statistics
    scratch.save(tmp_path / "m.keras")
    loaded = transfer(weights=str(tmp_path / "m.keras"))
    apply_trainable(loaded, "all")  # a later stage unfreezes every layer, batch norm excepted
    assert not moving_mean_moves(loaded)
    norms = [l for l in loaded.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and not any(l.trainable for l in norms)
    assert loaded.get_layer("backbone").get_layer("Conv1").trainable


def test_unknown_backbone_and_preprocessing_modes():
    with pytest.raises(NnlabError, match="did you mean 'MobileNetV2'"):
        transfer(backbone="MobileNetV22")
    assert preprocess_mode("ResNet50") == "caffe" and preprocess_mode("ResNet50V2") == "tf"
    assert preprocess_mode("EfficientNetB0") == "raw" and preprocess_mode("DenseNet121") == "torch"


def test_caffe_preprocessing_flips_channels_scales_and_centres():
    model = build_model({"name": "transfer", "backbone": "ResNet50", "preprocess": "caffe"}, (32, 32, 1),
                        "regression", 0)
    layer = model.get_layer("preprocess")
    probe = keras.Model(model.input, layer.output)
    pixel = np.zeros((1, 32, 32, 1), "float32") + 0.5  # grey: the same value in R, G and B
    out = keras.ops.convert_to_numpy(probe(pixel))[0, 0, 0]
    np.testing.assert_allclose(out, 127.5 - np.array([103.939, 116.779, 123.68]), atol=0.05)
    assert not layer.trainable


def test_max_params_refuses_before_training():
    with pytest.raises(NnlabError, match=r"has [\d,]+ parameters, over model.max_params=1,000"):
        transfer(max_params=1000)


def test_from_scratch_batch_norm_statistics_follow_the_data_quickly():
    scratch = [l for l in transfer().get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization)]
    assert scratch and all(l.momentum == 0.99 for l in scratch)


def test_imagenet_weights_that_cannot_be_fetched_are_one_sentence(monkeypatch):
    real = keras.applications.MobileNetV2

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":  # what keras.utils.get_file raises without a network
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")
        return real(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(NnlabError, match=r"ImageNet weights for MobileNetV2 could not be loaded .* put the weights "
                                         r"file in ~/.keras/models/, or set model.weights"):
        transfer(weights="imagenet")
