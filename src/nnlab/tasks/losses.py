"""Keras objects of the segmentation task: the soft Dice loss (alone or plus cross-entropy) and a Dice metric.

Registered as serializable: a saved model compiled with them reloads after `import nnlab.tasks`."""

import keras
from keras import ops


def pixel_cross_entropy(labels, y_pred):
    """Sparse cross-entropy per image, averaged over its pixels. Computed on (pixels, classes) rows: Keras's
    4-D sparse cross-entropy fails in PyTorch's backward pass ("grad_input must be contiguous")."""
    classes = y_pred.shape[-1]
    rows = keras.losses.sparse_categorical_crossentropy(ops.reshape(labels, (-1,)), ops.reshape(y_pred, (-1, classes)))
    return ops.mean(ops.reshape(rows, (ops.shape(y_pred)[0], -1)), axis=-1)


def squeezed_labels(y_true, y_pred):
    labels = ops.cast(y_true, "int32")
    return ops.squeeze(labels, -1) if len(labels.shape) == len(y_pred.shape) else labels  # (batch, h, w, 1) masks


@keras.saving.register_keras_serializable(package="nnlab")
class PixelCrossEntropy(keras.losses.Loss):
    """Sparse categorical cross-entropy over the pixels of each image (see pixel_cross_entropy)."""

    def __init__(self, name: str = "sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return pixel_cross_entropy(squeezed_labels(y_true, y_pred), y_pred)


@keras.saving.register_keras_serializable(package="nnlab")
class Dice(keras.losses.Loss):
    """1 - the soft Dice coefficient averaged over the classes (each class weighs the same, however small), plus
    sparse cross-entropy when `cross_entropy` (the per-pixel gradient Dice alone lacks early in training)."""

    def __init__(self, num_classes: int, cross_entropy: bool = False, smooth: float = 1.0,
                 name: str | None = None, **kwargs):
        super().__init__(name=name or ("ce_dice" if cross_entropy else "dice"), **kwargs)
        self.num_classes, self.cross_entropy, self.smooth = int(num_classes), bool(cross_entropy), float(smooth)

    def call(self, y_true, y_pred):
        labels = squeezed_labels(y_true, y_pred)
        onehot = ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        axes = tuple(range(len(y_pred.shape) - 1))  # batch and pixels: one coefficient per class
        overlap = ops.sum(onehot * y_pred, axis=axes)
        total = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
        # Keras expects a loss per sample; the batch-level coefficient is the same for every sample.
        dice = ops.mean((2.0 * overlap + self.smooth) / (total + self.smooth))
        loss = ops.ones_like(y_pred[:, 0, 0, 0]) * (1.0 - dice)
        return loss + pixel_cross_entropy(labels, y_pred) if self.cross_entropy else loss

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "cross_entropy": self.cross_entropy,
                "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="nnlab")
class MeanDice(keras.metrics.MeanIoU):
    """Mean Dice (F1 per class) from the same running pixel confusion matrix keras.metrics.MeanIoU keeps."""

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        truth, predicted, tp = ops.sum(cm, axis=1), ops.sum(cm, axis=0), ops.diag(cm)
        denominator = truth + predicted
        valid = ops.sum(ops.cast(ops.greater(denominator, 0), "float32"))
        dice = ops.divide_no_nan(2.0 * tp, denominator)
        return ops.divide_no_nan(ops.sum(dice), valid)
