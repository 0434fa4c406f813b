"""Convolutional networks built from conv-pool blocks."""

from collections.abc import Mapping
from typing import Any

import keras

from nnlab.errors import NnlabError
from nnlab.models import MODELS, dense_block, regularizer

POOLS = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}


def conv_block(x, i: int, *, filters: int, kernel: int = 3, convs: int = 1, pool: str = "max",
               dropout: float = 0.0, activation: str, batch_norm: bool, reg):
    for j in range(1, convs + 1):
        x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=not batch_norm,
                                kernel_regularizer=reg, name=f"block{i}_conv{j}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"block{i}_bn{j}")(x)
        x = keras.layers.Activation(activation, name=f"block{i}_act{j}")(x)
    if pool != "none":
        if pool not in POOLS:
            raise NnlabError(f"model.blocks[{i - 1}].pool is '{pool}'; use max, avg or none.")
        x = POOLS[pool](2, name=f"block{i}_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"block{i}_drop")(x)
    return x


@MODELS.register("cnn", inputs="images")
def cnn(x, *, blocks: list[Mapping[str, Any]], dense: list[int], activation: str,
        batch_norm: bool, dropout: float, global_pool: bool, l2: float):
    """Conv-pool `blocks` (filters, kernel, convs, pool, dropout), then `dense` layers with `dropout`."""
    reg = regularizer(l2=l2)
    for i, block in enumerate(blocks, start=1):
        x = conv_block(x, i, **dict(block), activation=activation, batch_norm=batch_norm, reg=reg)
    x = (keras.layers.GlobalAveragePooling2D if global_pool else keras.layers.Flatten)(name="features")(x)
    if dropout and not dense:
        x = keras.layers.Dropout(dropout, name="features_drop")(x)
    for i, units in enumerate(dense, start=1):
        x = dense_block(x, units, activation=activation, batch_norm=batch_norm, dropout=dropout,
                        reg=reg, name=f"dense{i}")
    return x
