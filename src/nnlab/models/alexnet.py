"""AlexNet-style networks: conv stages with shrinking kernels, overlapping max pooling, a wide dense head."""

import keras

from nnlab.errors import NnlabError
from nnlab.models import MODELS, dense_block, regularizer


def scaled(n: int, width: float) -> int:
    # A tiny width must still leave every layer at least one unit.
    return max(1, round(n * width))


def check(filters, kernels, pool_after, width: float, depth: int) -> None:
    if len(filters) != len(kernels):
        raise NnlabError(f"model.filters has {len(filters)} entries but model.kernels has {len(kernels)}; "
                         "give one kernel size per conv stage.")
    stray = sorted(set(pool_after) - set(range(1, len(filters) + 1)))
    if stray:
        raise NnlabError(f"model.pool_after names stages {stray}, but stages run 1..{len(filters)}; "
                         "list only 1-based stage numbers that exist.")
    if width <= 0 or depth < 1:
        raise NnlabError(f"model.width is {width} and model.depth is {depth}; use width > 0 and depth >= 1.")


def stage(x, i: int, *, filters: int, kernel: int, depth: int, stride: int, pool: bool,
          activation: str, batch_norm: bool, reg):
    for j in range(1, depth + 1):
        # With BN the bias is redundant: BN's beta plays its part.
        x = keras.layers.Conv2D(filters, kernel, strides=stride if j == 1 else 1, padding="same",
                                use_bias=not batch_norm, kernel_regularizer=reg, name=f"stage{i}_conv{j}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"stage{i}_bn{j}")(x)
        x = keras.layers.Activation(activation, name=f"stage{i}_act{j}")(x)
    if pool:
        # Overlapping windows (3 wide, stride 2) as in AlexNet; "same" keeps odd sizes: 7 -> 4.
        x = keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name=f"stage{i}_pool")(x)
    return x


@MODELS.register("alexnet", inputs="images")
def alexnet(x, *, filters: list[int], kernels: list[int],
            stem_stride: int, pool_after: list[int], dense: list[int],
            width: float, depth: int, batch_norm: bool, dropout: float,
            activation: str, l2: float):
    """Conv stages (`depth` convs of `filters[i] * width`, kernel `kernels[i]`), max pooling after the
    1-based stages in `pool_after`, then `dense` layers of `units * width` with `dropout`."""
    check(filters, kernels, pool_after, width, depth)
    reg = regularizer(l2=l2)
    for i, (n, kernel) in enumerate(zip(filters, kernels), start=1):
        x = stage(x, i, filters=scaled(n, width), kernel=kernel, depth=depth,
                  stride=stem_stride if i == 1 else 1, pool=i in pool_after, activation=activation,
                  batch_norm=batch_norm, reg=reg)
    x = keras.layers.Flatten(name="features")(x)
    if dropout and not dense:
        x = keras.layers.Dropout(dropout, name="features_drop")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(x, scaled(units, width), activation=activation, batch_norm=batch_norm,
                        dropout=dropout, reg=reg, name=f"dense{i}")
    return x
