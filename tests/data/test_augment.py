import dataclasses

import numpy as np
import pytest

from nnlab.config.data import AugmentConfig
from nnlab.data.augment import augmentation_layers, input_layers
from nnlab.errors import NnlabError
from nnlab.models import build_model


def layers_for(seed=0, **options):
    return augmentation_layers(**dataclasses.asdict(AugmentConfig(**options)), seed=seed)


def test_the_default_augment_config_adds_no_layers():
    assert layers_for() == []
    assert input_layers(None, AugmentConfig(), seed=0) == []


def test_each_option_adds_its_layer():
    layers = layers_for(flip="horizontal", rotation=0.1, zoom=0.1, shift=0.1, contrast=0.2, brightness=0.2, seed=0)
    assert [l.name for l in layers] == ["aug_flip", "aug_rotation", "aug_zoom", "aug_shift", "aug_contrast",
                                        "aug_brightness"]


def test_augmentation_changes_training_inputs_only():
    layers = layers_for(flip="horizontal", shift=0.2, fill_mode="constant", seed=1)
    model = build_model({"name": "mlp", "widths": [4]}, (8, 8, 1), "classification", 2, layers)
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    augment = model.get_layer("aug_shift")
    flipped = model.get_layer("aug_flip")
    assert np.allclose(augment(flipped(x, training=False), training=False), x)
    assert not np.allclose(augment(flipped(x, training=True), training=True), x)
    # inference through the whole model is deterministic
    assert np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_flip_mode():
    with pytest.raises(NnlabError, match="did you mean 'horizontal'"):
        layers_for(flip="horizontl")
