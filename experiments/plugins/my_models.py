"""A user's own model, registered from outside the nnlab package (listed in `plugins`)."""

import keras

from nnlab.models import MODELS


@MODELS.register("mlp_skip")
def mlp_skip(x, *, width: int = 64, blocks: int = 2, dropout: float = 0.0):
    """Dense layers with residual connections: x + Dense(Dense(x))."""
    x = keras.layers.Dense(width, activation="relu")(keras.layers.Flatten()(x))
    for _ in range(blocks):
        y = keras.layers.Dense(width, activation="relu")(x)
        y = keras.layers.Dense(width)(y)
        x = keras.layers.Activation("relu")(keras.layers.Add()([x, y]))
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return x
