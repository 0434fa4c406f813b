"""Training-time augmentation as Keras preprocessing layers placed at the model's input.

Keras runs these layers only when training (`training=True`), so evaluation and the saved model see clean
images, and they work the same on every backend. Config: the top-level `augment` node (all off by default).
"""

import dataclasses

import keras

from nnlab.config.data import AugmentConfig

FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")


def augmentation_layers(*, flip: str | None, rotation: float, zoom: float, shift: float, contrast: float,
                        brightness: float, fill_mode: str, seed: int | None) -> list[keras.layers.Layer]:
    """Factors are Keras's: rotation in fractions of a full turn, zoom/shift in fractions of the image size."""
    from nnlab.errors import NnlabError, unknown_name

    layers: list[keras.layers.Layer] = []
    if flip:
        if flip not in FLIPS:
            raise NnlabError(unknown_name("augment.flip mode", flip, FLIPS))
        layers.append(keras.layers.RandomFlip(flip, seed=seed, name="aug_flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode=fill_mode, seed=seed, name="aug_rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode=fill_mode, seed=seed, name="aug_zoom"))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode=fill_mode, seed=seed, name="aug_shift"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0.0, 1.0), seed=seed, name="aug_contrast"))
    if brightness:
        layers.append(keras.layers.RandomBrightness(brightness, value_range=(0.0, 1.0), seed=seed,
                                                    name="aug_brightness"))
    return layers


def input_layers(rescale: float | None, augment: AugmentConfig, seed: int | None) -> list[keras.layers.Layer]:
    """Rescaling of raw pixels (so the saved model takes what a camera gives), then training-only augmentation."""
    scaling = [keras.layers.Rescaling(rescale, name="rescale")] if rescale else []
    return scaling + augmentation_layers(**dataclasses.asdict(augment), seed=seed)
