"""Keras pieces shared by the tasks, the model builders, training and tracking: an ensemble's MemberAverage and
members, the model as MLflow serves it, and a float32 scope for inference copies. Nothing of nnlab's is imported
here, so every layer above may use it."""

import contextlib

import keras


@keras.saving.register_keras_serializable(package="nnlab")
class MemberAverage(keras.layers.Layer):
    """The members' outputs side by side while training, their mean otherwise.

    Side by side, a one-unit target broadcasts against every member's column, so Keras's loss (a mean over the
    last axis) is the mean of the members' own losses: each member learns as if alone, and validation and test
    see the averaged prediction. (A loss on the mean would train one big coupled network instead.)
    """

    def call(self, outputs, training=None):
        if training:
            return keras.ops.concatenate(outputs, axis=-1)
        return keras.ops.mean(keras.ops.stack(outputs, axis=0), axis=0)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@contextlib.contextmanager
def float32_policy():
    """Layers built inside compute in float32 when they name no dtype (a mixed-precision job set the global
    policy for training; copies and reloads of its model for inference should not inherit it)."""
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(before)


def serving_model(model):
    """The model as MLflow serves it: the same layers and weights (shared, not copied) in an uncompiled graph,
    so no custom loss or metric (Dice, the pixel cross-entropy) is saved with it, and an ensemble's MemberAverage
    replaced by Keras's own Average, the same mean at inference. It loads with Keras alone: no nnlab import."""
    def builtin(layer):
        if isinstance(layer, MemberAverage):
            return keras.layers.Average(name=layer.name, dtype=layer.dtype_policy)
        return layer

    bare = keras.Model(model.inputs, model.outputs, name=model.name)  # uncompiled; clone_model copies compile
    return keras.models.clone_model(bare, clone_function=builtin)


def members(model: keras.Model) -> list[keras.Model]:
    """An ensemble's member sub-models; a single model is its own one member."""
    found = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith("member")]
    return found or [model]
