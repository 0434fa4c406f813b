"""Model builders: each registered builder turns an input tensor into features; `build_model` adds the head.

Builders take their config's keys as keyword arguments, so `conf/model/<name>.yaml` is the builder's
signature written down.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from nnlab.registry import Registry

MODELS = Registry("model")


def head(x, task: str, num_classes: int):
    # float32 output keeps the softmax and the loss stable under mixed precision.
    if task == "classification":
        return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)
    return keras.layers.Dense(1, dtype="float32", name="head")(x)


def build_model(cfg: Mapping[str, Any], input_shape: tuple[int, ...], task: str, num_classes: int,
                augment: Sequence[keras.layers.Layer] = ()) -> keras.Model:
    """Input -> training-only augmentation layers -> the registered body -> the task's head."""
    kwargs = dict(cfg)
    name = kwargs.pop("name")
    body = MODELS.get(name)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for layer in augment:
        x = layer(x)
    outputs = head(body(x, **kwargs), task, num_classes)
    return keras.Model(inputs, outputs, name=name)


def regularizer(l1: float = 0.0, l2: float = 0.0):
    if l1 or l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    return None


def dense_block(x, units: int, *, activation: str, batch_norm: bool, dropout: float, reg=None, name: str):
    # Dense -> BN -> activation: with BN the bias is redundant (BN's beta plays its part).
    x = keras.layers.Dense(units, use_bias=not batch_norm, kernel_regularizer=reg, name=f"{name}_dense")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


from nnlab.models import conv, dense  # noqa: E402,F401  (registration)
