"""Transfer learning: any keras.applications backbone by name, with its weights (none, imagenet, or a file that
nnlab or Keras saved), and the freezing that the trainer's stages change for gradual unfreezing."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from nnlab.errors import NnlabError, unknown_name
from nnlab.models import MODELS, dense_block, members, regularizer

BACKBONE = "backbone"  # the nested model's name: how stages and weight files find it
# What each family's ImageNet weights expect, starting from inputs already scaled to [0, 1]. Built from
# stock Keras layers so a saved model loads (and shows in Netron) without nnlab.
FAMILIES = {
    "raw": ("EfficientNet", "ConvNeXt", "MobileNetV3"),  # these rescale inside the application: give 0-255
    "torch": ("DenseNet",),
    "caffe": ("ResNet50", "ResNet101", "ResNet152", "VGG"),  # BGR, 0-255, ImageNet mean subtracted
    "tf": ("MobileNet", "ResNet", "Inception", "Xception", "NASNet"),  # [-1, 1]; checked after caffe (ResNet*V2)
}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])  # keras.applications.imagenet_utils, mode="caffe"


def backbone_names() -> list[str]:
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def preprocess_mode(backbone: str) -> str:
    if backbone.endswith("V2") and backbone.startswith("ResNet"):
        return "tf"
    for mode, prefixes in FAMILIES.items():
        if backbone.startswith(prefixes):
            return mode
    return "tf"


def preprocessing(x, mode: str):
    if x.shape[-1] == 1:  # grayscale data into a colour backbone
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if mode == "raw":
        return keras.layers.Rescaling(255.0, name="preprocess")(x)
    if mode == "tf":
        return keras.layers.Rescaling(2.0, offset=-1.0, name="preprocess")(x)
    if mode == "torch":
        return keras.layers.Normalization(mean=IMAGENET_MEAN, variance=IMAGENET_STD**2, name="preprocess")(x)
    if mode == "caffe":  # one fixed 1x1 conv: RGB -> BGR, x255, minus the BGR mean
        flip = np.eye(3)[::-1] * 255.0
        bias = -CAFFE_MEAN_BGR
        layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False,
                                    kernel_initializer=keras.initializers.Constant(flip[None, None]),
                                    bias_initializer=keras.initializers.Constant(bias))
        return layer(x)
    if mode == "none":
        return x
    raise NnlabError(unknown_name("model.preprocess mode", mode, ("auto", "none", *FAMILIES)))


def application(backbone: str, input_shape: tuple[int, ...], backbone_kwargs: dict[str, Any]) -> keras.Model:
    if not hasattr(keras.applications, backbone):
        raise NnlabError(unknown_name("keras.applications backbone", backbone, backbone_names()))
    return getattr(keras.applications, backbone)(include_top=False, weights=None, input_shape=input_shape,
                                                 name=BACKBONE, **backbone_kwargs)


def load_weights(base: keras.Model, backbone: str, weights: str | None, backbone_kwargs: dict[str, Any]) -> None:
    if weights in (None, "none"):
        return
    if weights == "imagenet":
        try:  # Keras caches the file in ~/.keras/models: a copy put there works offline
            ref = getattr(keras.applications, backbone)(include_top=False, weights="imagenet",
                                                        input_shape=base.input_shape[1:], **backbone_kwargs)
        except Exception as err:  # noqa: BLE001 (download errors come in many types)
            raise NnlabError(f"ImageNet weights for {backbone} could not be loaded ({err}); without internet put "
                             "the weights file in ~/.keras/models/, or set model.weights to a .keras/.h5 file "
                             "that nnlab saved.") from err
        copy_weights(ref, base, "ImageNet")
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise NnlabError(f"model.weights file {path} does not exist; give a .keras/.h5 model or .weights.h5 file "
                         "saved by nnlab or Keras, 'imagenet', or null.")
    if path.name.endswith(".weights.h5"):
        base.load_weights(path)
        return
    saved = keras.saving.load_model(path, compile=False)
    source = saved.get_layer(BACKBONE) if BACKBONE in [layer.name for layer in saved.layers] else saved
    copy_weights(source, base, str(path))


def copy_weights(source: keras.Model, target: keras.Model, origin: str) -> None:
    shapes = [tuple(w.shape) for w in source.weights]
    if shapes != [tuple(w.shape) for w in target.weights]:
        raise NnlabError(f"The weights in {origin} do not fit this backbone ({len(shapes)} arrays vs "
                         f"{len(target.weights)}); use the same model.backbone and backbone_kwargs they were "
                         "trained with.")
    target.set_weights(source.get_weights())


@MODELS.register("transfer", inputs="images")
def transfer(x, *, backbone: str, weights: str | None, trainable: Any,
             backbone_kwargs: dict[str, Any] | None, resize: Sequence[int] | None,
             preprocess: str, freeze_batch_norm: bool | None, pooling: str,
             dense: Sequence[int], dropout: float, l2: float):
    """`backbone` from keras.applications without its top (inputs resized to `resize` if given), then
    pooling, `dense` layers and `dropout`.

    `trainable`: all | none | N (the backbone's last N layers) | a list of layer-name prefixes. Batch norm runs
    in inference mode when `freeze_batch_norm` (default: whenever weights are loaded), so fine-tuning on a small
    set does not wreck the statistics the backbone learnt.
    """
    kwargs = dict(backbone_kwargs or {})
    if resize:  # e.g. 32 px CIFAR up to a size the backbone's strides suit
        x = keras.layers.Resizing(*resize, name="resize")(x)
    x = preprocessing(x, preprocess_mode(backbone) if preprocess == "auto" else preprocess)
    base = application(backbone, tuple(x.shape[1:]), kwargs)
    load_weights(base, backbone, weights, kwargs)
    settle_batch_norm(base, weights, freeze_batch_norm)
    x = base(x)
    set_trainable(base, trainable)
    if pooling not in POOLINGS:
        raise NnlabError(unknown_name("model.pooling", pooling, POOLINGS))
    x = POOLINGS[pooling](name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="features_drop")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(x, units, activation="relu", batch_norm=False, dropout=dropout, reg=regularizer(l2=l2),
                        name=f"dense{i}")
    return x


def settle_batch_norm(base: keras.Model, weights: str | None, freeze: bool | None) -> None:
    """Loaded weights: batch norm frozen (inference mode, statistics kept) unless `freeze` is false, so
    fine-tuning on a small set does not wreck what the backbone learnt. Keras 3 overrides a `training=False`
    given at graph-building time with the outer model's flag, but runs a non-trainable BatchNormalization in
    inference mode, so freezing is `trainable = False`, kept by set_trainable through every stage.
    Fresh weights: the applications' momentum 0.999 suits ImageNet's long epochs; on a few thousand images the
    moving statistics would lag for dozens of epochs and validation would look like chance."""
    loaded = weights not in (None, "none")
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        if not loaded:
            layer.momentum = min(layer.momentum, 0.99)
    base.frozen_batch_norm = freeze if freeze is not None else loaded
    if base.frozen_batch_norm:
        for layer in norms:
            layer.trainable = False


POOLINGS = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
            "flatten": keras.layers.Flatten}


def set_trainable(target: keras.Model, spec: Any) -> None:
    """Freeze or unfreeze `target`'s layers: all | none | N (the last N layers) | list of name prefixes."""
    layers = target.layers
    if spec == "all" or spec is True:
        chosen = set(range(len(layers)))
    elif spec in ("none", None, False) or spec == 0:
        chosen = set()
    elif isinstance(spec, int) and spec > 0:
        chosen = set(range(max(len(layers) - spec, 0), len(layers)))
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        prefixes = tuple(str(p) for p in spec)
        chosen = {i for i, layer in enumerate(layers) if layer.name.startswith(prefixes)}
        if not chosen:
            raise NnlabError(f"No layer of '{target.name}' starts with any of {list(prefixes)}; pick prefixes "
                             f"from its layer names (model_summary.txt), e.g. {layers[-1].name}.")
    else:
        raise NnlabError(f"trainable is {spec!r}; use all, none, a positive number of top layers, or a list of "
                         "layer-name prefixes.")
    target.trainable = True  # a frozen parent would hide the layers it contains
    frozen_norms = getattr(target, "frozen_batch_norm", False)
    for i, layer in enumerate(layers):
        layer.trainable = i in chosen and not (frozen_norms and isinstance(layer, keras.layers.BatchNormalization))


def apply_trainable(model: keras.Model, spec: Any) -> None:
    """A stage's `trainable` on a whole model: to its backbone where it has one, else to its layers with the
    head kept trainable (so stages also work on models built from blocks); to each member of an ensemble."""
    for member in members(model):
        if BACKBONE in [layer.name for layer in member.layers]:
            set_trainable(member.get_layer(BACKBONE), spec)
            continue
        set_trainable(member, spec)
        member.get_layer("head").trainable = True
