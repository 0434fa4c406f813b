"""Small pieces the exercise scripts share (they import nnlab anyway): the per-epoch learning-rate schedule.

A per-epoch schedule, not one of nnlab.training.optim's per-step ones: create_model compiles before train_model knows the
number of epochs, and a compiled optimizer's float learning rate can be changed per epoch but not replaced by a
schedule."""

import math

import keras


def cosine(learning_rate: float, epochs: int, warmup: int = 0) -> keras.callbacks.Callback:
    """A linear warm-up over `warmup` epochs, then a half cosine from `learning_rate` down to zero at the end. Each
    epoch takes the curve's value at its middle (the mean of a per-step cosine over it), so a short run still ends
    at a small rate."""
    def rate(epoch: int, lr: float) -> float:
        if epoch < warmup:
            return learning_rate * (epoch + 1) / (warmup + 1)
        middle = (epoch - warmup + 0.5) / max(epochs - warmup, 1)
        return learning_rate * 0.5 * (1 + math.cos(math.pi * min(middle, 1.0)))

    return keras.callbacks.LearningRateScheduler(rate)
