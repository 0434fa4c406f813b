"""Training-time augmentation, from one of two libraries (the top-level `augment` node, all off by default).

library=keras: Keras preprocessing layers placed at the model's input. Keras runs them only when training
(`training=True`), so evaluation and the saved model see clean images, and they work the same on every backend.

library=albumentations: `augment.transforms` (albumentations classes by name, with their arguments) composed
with `A.Compose` and applied to each training image in the input pipeline (`AlbumentationsTransform`), and to
its mask too where the task asks for it (segmentation); the model and the saved model contain no augmentation.
"""

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from nnlab.config.augment_checks import AUGMENT_LIBRARIES as LIBRARIES
from nnlab.config.augment_checks import albumentations_module
from nnlab.config.data import AugmentConfig

FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")


def augmentation_layers(*, flip: str | None, rotation: float, zoom: float, shift: float, contrast: float,
                        brightness: float, fill_mode: str, library: str, transforms: Sequence[Mapping[str, Any]],
                        seed: int | None) -> list[keras.layers.Layer]:
    """Factors are Keras's: rotation in fractions of a full turn, zoom/shift in fractions of the image size.
    albumentations' transforms are no layers: the task moves them to the pipeline (`pipeline_augmentation`)."""
    from nnlab.errors import NnlabError, unknown_name

    if library != "keras":
        if library not in LIBRARIES:
            raise NnlabError(unknown_name("augment.library", library, LIBRARIES))
        raise NnlabError(f"augment.library={library} runs in the input pipeline, and this task passed it to the "
                         "model's layers instead; its task's `augmentation` must call "
                         "nnlab.data.augment.pipeline_augmentation.")
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


def pipeline_augmentation(augment: AugmentConfig, *, masks: bool) -> "tuple[AugmentConfig, AlbumentationsTransform]":
    """What a task's `augmentation` returns for library=albumentations: no augmentation layers in the model, and
    the transforms on the training batches (`masks`: the target is a mask that moves with its image)."""
    return AugmentConfig(), AlbumentationsTransform([dict(t) for t in augment.transforms], masks)


@dataclasses.dataclass
class AlbumentationsTransform:
    """`transform(x, y, rng)` of nnlab.data.pipeline: each image of a training batch (and its mask, with `masks`)
    through `A.Compose(transforms)`. Reproducible: the pipeline's per-batch `rng` seeds the Compose, and each
    worker thread has a Compose of its own, since seeding and drawing on a shared one would interleave."""

    transforms: list[dict[str, Any]]
    masks: bool = False

    def __post_init__(self) -> None:
        self.local = threading.local()

    def compose(self):
        if not hasattr(self.local, "compose"):
            A = albumentations_module()
            steps = [getattr(A, t["name"])(**{k: v for k, v in t.items() if k != "name"}) for t in self.transforms]
            self.local.compose = A.Compose(steps)
        return self.local.compose

    def __call__(self, x: np.ndarray, y: Any, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
        from nnlab.errors import NnlabError

        if np.ndim(x) != 4:
            raise NnlabError(f"augment.library=albumentations transforms images (batch, height, width, channels); "
                             f"this dataset's inputs have shape {np.shape(x)[1:]}: unset augment.library.")
        compose = self.compose()
        compose.set_random_seed(int(rng.integers(2**31)))
        outs = [compose(image=x[i], mask=y[i]) if self.masks else compose(image=x[i]) for i in range(len(x))]
        images = [o["image"][..., None] if o["image"].ndim == 2 else o["image"] for o in outs]  # cv2 may drop C=1
        if any(image.shape != x.shape[1:] for image in images):
            changed = next(image.shape for image in images if image.shape != x.shape[1:])
            raise NnlabError(f"augment.transforms turned a {x.shape[1:]} image into {changed}: the model's input "
                             "size is fixed, so use transforms that keep it (crops with the same size, no Resize).")
        return np.stack(images).astype(x.dtype, copy=False), np.stack([o["mask"] for o in outs]) if self.masks else y
