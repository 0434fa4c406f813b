"""Multi-layer perceptrons."""

import keras

from nnlab.models import MODELS, dense_block, regularizer


@MODELS.register("mlp")
def mlp(x, *, widths: list[int] | None, depth: int, width: int, activation: str,
        dropout: float, batch_norm: bool, l1: float, l2: float):
    """Flatten, then `widths` hidden layers (or `depth` layers of `width` units)."""
    widths = list(widths) if widths is not None else [width] * depth
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(widths, start=1):
        x = dense_block(x, units, activation=activation, batch_norm=batch_norm, dropout=dropout,
                        reg=regularizer(l1, l2), name=f"hidden{i}")
    return x
