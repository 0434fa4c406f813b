"""Small residual networks (ResNet v1.5: BN after each conv, stride on the 3x3 conv) for 28-100 px images."""

import keras

from nnlab.errors import NnlabError, unknown_name
from nnlab.models import MODELS, regularizer

BLOCKS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}


def conv_bn(x, filters: int, kernel: int, *, stride: int = 1, relu: bool = True, zero_gamma: bool = False,
            reg, name: str):
    # He initialisation suits the ReLUs; the conv bias is redundant before BN.
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", kernel_regularizer=reg, name=f"{name}_conv")(x)
    # A zero gamma on a branch's last BN makes each block start as the identity, which eases early training.
    gamma = "zeros" if zero_gamma else "ones"
    x = keras.layers.BatchNormalization(gamma_initializer=gamma, name=f"{name}_bn")(x)
    if relu:
        x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return x


def residual(x, filters: int, *, stride: int, block: str, reg, name: str):
    out = filters * EXPANSION[block]
    if block == "basic":
        y = conv_bn(x, filters, 3, stride=stride, reg=reg, name=f"{name}_1")
        y = conv_bn(y, out, 3, relu=False, zero_gamma=True, reg=reg, name=f"{name}_2")
    else:
        y = conv_bn(x, filters, 1, reg=reg, name=f"{name}_1")
        y = conv_bn(y, filters, 3, stride=stride, reg=reg, name=f"{name}_2")
        y = conv_bn(y, out, 1, relu=False, zero_gamma=True, reg=reg, name=f"{name}_3")
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = conv_bn(x, out, 1, stride=stride, relu=False, reg=reg, name=f"{name}_proj")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def check(stages, filters, block: str, width: float) -> None:
    if block not in BLOCKS:
        raise NnlabError(unknown_name("resnet block", block, BLOCKS))
    if len(stages) != len(filters):
        raise NnlabError(f"model.stages has {len(stages)} entries but model.filters has {len(filters)}; "
                         "give one filter count per stage.")
    if not stages or min(stages) < 1 or width <= 0:
        raise NnlabError(f"model.stages is {list(stages)} and model.width is {width}; "
                         "use at least one stage, at least one block per stage, and width > 0.")


@MODELS.register("resnet", inputs="images")
def resnet(x, *, stages: list[int], filters: list[int], block: str,
           stem_filters: int, stem_kernel: int, stem_stride: int, stem_pool: bool,
           width: float, dropout: float, l2: float):
    """Stem conv (+ optional 3x3/2 max pool), then `stages[i]` residual blocks of `filters[i] * width`
    filters, halving the resolution at the start of every stage after the first; global average pooling."""
    check(stages, filters, block, width)
    reg = regularizer(l2=l2)
    x = conv_bn(x, stem_filters, stem_kernel, stride=stem_stride, reg=reg, name="stem")
    if stem_pool:
        x = keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name="stem_pool")(x)
    for s, (blocks, n) in enumerate(zip(stages, filters), start=1):
        for b in range(1, blocks + 1):
            stride = 2 if s > 1 and b == 1 else 1
            x = residual(x, max(1, round(n * width)), stride=stride, block=block, reg=reg,
                         name=f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="features_drop")(x)
    return x
