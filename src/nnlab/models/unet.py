"""U-Net (Ronneberger et al., 2015) for segmentation: an encoder (plain convs, or a keras.applications backbone)
whose skip connections feed a decoder that upsamples back to the input's height and width.

The builder returns the per-pixel features; the segmentation task adds the 1x1 conv softmax head. Defaults live
in nnlab.config.models.UNetConfig only, so every argument here is required.
"""

import functools
import warnings
from pathlib import Path
from typing import Any

import keras

from nnlab.errors import NnlabError, unknown_name
from nnlab.models import MODELS, regularizer
from nnlab.models.transfer import BACKBONE, application, load_weights, preprocess_mode, preprocessing, settle_batch_norm

UPSAMPLINGS = ("transpose", "bilinear")


@MODELS.register("unet", inputs="images")
def unet(x, *, depth: int, filters: int, width: float, convs: int, batch_norm: bool, dropout: float,
         upsampling: str, activation: str, l2: float, backbone: str | None, weights: str | None,
         backbone_kwargs: dict[str, Any], preprocess: str, freeze_batch_norm: bool | None):
    """`depth` down-sampling levels of `convs` 3x3 convs with `filters * 2**level * width` filters, a
    bottleneck, then a decoder that upsamples level by level, concatenating the encoder's output at the same
    resolution. With a `backbone`, its last layer at each of H/2 ... H/2**depth is the skip, the deepest one the
    bottleneck."""
    check(depth, filters, width, convs, dropout, upsampling, backbone, weights)
    check_size(x, depth)
    reg = regularizer(l2=l2)
    block = functools.partial(conv_block, convs=convs, batch_norm=batch_norm, activation=activation, reg=reg)

    def count(level: int) -> int:
        return max(1, round(filters * 2**level * width))

    if backbone is None:
        x, skips = plain_encoder(x, depth, count, block)
    else:
        x, skips = backbone_encoder(x, depth, backbone, weights, dict(backbone_kwargs or {}), preprocess,
                                    freeze_batch_norm)
    if dropout:
        x = keras.layers.Dropout(dropout, name="bottleneck_drop")(x)
    for level in reversed(range(depth)):
        x = upsample(x, count(level), upsampling, reg, name=f"dec{level}")
        if level in skips:  # a backbone may have no layer at some resolution (a stride-4 stem)
            x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = block(x, count(level), name=f"dec{level}")
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dec{level}_drop")(x)
    return x


def check(depth, filters, width, convs, dropout, upsampling, backbone, weights) -> None:
    if upsampling not in UPSAMPLINGS:
        raise NnlabError(unknown_name("model.upsampling", upsampling, UPSAMPLINGS))
    if depth < 1:
        raise NnlabError(f"model.depth={depth}: a U-Net needs depth >= 1 (its number of down-sampling levels); "
                         "set model.depth to 1 or more.")
    if filters < 1 or convs < 1 or width <= 0:
        raise NnlabError(f"model.filters={filters}, model.convs={convs} and model.width={width}: a U-Net needs "
                         "filters >= 1, convs >= 1 and width > 0; change the ones that are not.")
    if not 0 <= dropout < 1:
        raise NnlabError(f"model.dropout={dropout} is the fraction of units dropped; set it in [0, 1).")
    if backbone is None and weights not in (None, "none"):
        raise NnlabError(f"model.weights={weights!r} loads a pretrained encoder, which needs model.backbone "
                         "(e.g. MobileNetV2); set model.backbone, or model.weights=null for the plain encoder.")


def check_size(x, depth: int) -> None:
    if len(x.shape) != 4:
        raise NnlabError(f"model 'unet' needs images (batch, height, width, channels) but the inputs have shape "
                         f"{tuple(x.shape)}; use an image dataset or another model.")
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:  # variable-size inputs: only the data can tell
        return
    if height % 2**depth or width % 2**depth:
        raise NnlabError(f"model.depth={depth} needs image sides divisible by {2**depth}; the images are "
                         f"{height}x{width}: resize them (dataset.image_size) or lower the depth.")


def conv_block(x, filters: int, *, convs: int, batch_norm: bool, activation: str, reg, name: str):
    for i in range(1, convs + 1):
        # He initialisation suits ReLU-like activations; the bias is redundant before batch norm.
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal",
                                kernel_regularizer=reg, name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation(activation, name=f"{name}_act{i}")(x)
    return x


def upsample(x, filters: int, mode: str, reg, name: str):
    """Twice the height and width with `filters` channels; linear, as the block after it normalises and
    activates."""
    if mode == "transpose":
        # 2x2 kernels at stride 2 tile the output exactly: no checkerboard from overlapping kernels.
        return keras.layers.Conv2DTranspose(filters, 2, strides=2, kernel_regularizer=reg, name=f"{name}_up")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
    return keras.layers.Conv2D(filters, 3, padding="same", kernel_regularizer=reg, name=f"{name}_up")(x)


def plain_encoder(x, depth: int, count, block):
    """Blocks at H, H/2, ... H/2**(depth-1) (the skips), each followed by 2x2 max pooling; then the
    bottleneck block at H/2**depth."""
    skips = {}
    for level in range(depth):
        x = block(x, count(level), name=f"enc{level}")
        skips[level] = x
        x = keras.layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    return block(x, count(depth), name="bottleneck"), skips


def backbone_encoder(x, depth: int, backbone: str, weights: str | None, kwargs: dict[str, Any],
                     preprocess: str, freeze_batch_norm: bool | None):
    """The backbone cut after its last layer at H/2**depth, as one nested model named "backbone" (so trainer
    stages freeze it and weight files find it) with one output per resolution it has among H/2 ... H/2**depth.
    Returns the deepest output (the bottleneck) and the others by level."""
    x = preprocessing(x, preprocess_mode(backbone) if preprocess == "auto" else preprocess)
    base = application(backbone, tuple(x.shape[1:]), kwargs)
    levels = skip_outputs(base, depth, backbone)
    encoder = keras.Model(base.input, [levels[level] for level in sorted(levels)], name=BACKBONE)
    load_encoder(base, encoder, backbone, weights, kwargs)
    settle_batch_norm(encoder, weights, freeze_batch_norm)  # the encoder shares the backbone's layers
    outputs = encoder(x)
    outputs = dict(zip(sorted(levels), outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    return outputs.pop(depth), outputs


def skip_outputs(base: keras.Model, depth: int, backbone: str) -> dict[int, Any]:
    """{level: output of the LAST layer of `base` whose output is H/2**level x W/2**level}, levels 1..depth.

    The last layer at a resolution carries that resolution's richest features, just before the next stride.
    Padding layers are no candidates: a padded deeper map can have a shallower level's size (ResNet50V2 pads
    its 2x2 maps of 64 px images to 4x4)."""
    height, width = base.input.shape[1:3]
    sizes = {(height // 2**level, width // 2**level): level for level in range(1, depth + 1)}
    found = {}
    for layer in base.layers:
        out = layer.output
        if isinstance(layer, keras.layers.ZeroPadding2D) or not isinstance(out, keras.KerasTensor):
            continue
        if len(out.shape) == 4 and tuple(out.shape[1:3]) in sizes:
            found[sizes[tuple(out.shape[1:3])]] = out
    if depth not in found:
        reach = max(found, default=0)
        raise NnlabError(f"model.backbone={backbone} reaches 1/{2**reach} of the {height}x{width} images at most "
                         f"but model.depth={depth} needs 1/{2**depth}; set model.depth={reach} or less, or use "
                         "bigger images.")
    return found


def load_encoder(base: keras.Model, encoder: keras.Model, backbone: str, weights: str | None,
                 kwargs: dict[str, Any]) -> None:
    """ImageNet weights and files saved from a whole application (a transfer model) fit `base`; files saved
    from a U-Net hold its cut encoder. Both share their layers, so loading either fills the encoder."""
    if weights in (None, "none", "imagenet") or not Path(weights).expanduser().is_file():
        load_weights(base, backbone, weights, kwargs)  # also the one-sentence error for a missing file
        return
    error = attempt(base, backbone, weights, kwargs) and attempt(encoder, backbone, weights, kwargs)
    if error:
        raise NnlabError(f"The weights in {weights} fit neither the whole {backbone} nor this U-Net's encoder; "
                         "use the model.backbone, backbone_kwargs and (for a U-Net file) model.depth they were "
                         "saved with.") from error


def attempt(target: keras.Model, backbone: str, weights: str, kwargs: dict[str, Any]) -> Exception | None:
    """Loads `weights` into `target`; the error if they do not fit, whose warnings are dropped (Keras warns
    about every layer of a .weights.h5 file of another structure, which would only mislead)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_weights(target, backbone, weights, kwargs)
        except (NnlabError, ValueError) as err:  # ValueError: Keras on a .weights.h5 file of another structure
            return err
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return None
