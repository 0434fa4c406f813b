"""Exercise 1: Fashion-MNIST with a fully connected network (bar: test accuracy >= 85%).

Reads the platform's layout: PATH/train_features.npy (uint8, n x 28 x 28) with PATH/train_target.npy, and
PATH/test_features.npy with PATH/test_target.npy. Built on nnlab's input pipeline and MLP builder, so it runs on any
Keras backend. Pixels stay uint8 until the model's first layer scales them.
Grade it: nnlab course run exer_1.py PATH   (a layout of nnlab's copy: nnlab course prepare fashion_mnist PATH)
"""

import os

import keras
import numpy as np

from nnlab.config.data import AugmentConfig
from nnlab.course.kit import cosine
from nnlab.data.augment import input_layers
from nnlab.data.pipeline import batches
from nnlab.models import build_model

SEED = 12345
CLASSES = 10
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
MLP = {"name": "mlp", "widths": [1024, 512, 256], "batch_norm": True, "dropout": 0.3}


def read_split(path: str, part: str):
    """(images n x 28 x 28 x 1, labels) of `part` (train or test); os.path.join also takes PATH without its slash."""
    x = np.load(os.path.join(path, f"{part}_features.npy"))
    y = np.load(os.path.join(path, f"{part}_target.npy")).astype("int64")
    return x.reshape(len(x), 28, 28, 1).astype("uint8"), y


def load_train(path: str):
    """Training batches, reshuffled every epoch."""
    x, y = read_split(path, "train")
    return batches(x, y, BATCH_SIZE, shuffle=True, seed=SEED)


def load_test(path: str):
    x, y = read_split(path, "test")
    return batches(x, y, BATCH_SIZE, shuffle=False)


def create_model(input_shape) -> keras.Model:
    """Three dense layers (1024-512-256) with batch norm and dropout 0.3; Adam; a cosine schedule is added by
    train_model once the number of epochs is known."""
    layers = input_layers(1 / 255, AugmentConfig(), SEED)  # uint8 pixels scaled inside the model
    model = build_model(MLP, tuple(input_shape), "classification", CLASSES, layers)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_model(model: keras.Model, train_data, test_data, batch_size=None, epochs: int = 30,
                steps_per_epoch=None, validation_steps=None) -> keras.Model:
    """fit() with the platform's arguments; `batch_size` applies only to arrays (load_train batches already).
    Measured on a 2-core CPU: see nnlab's README, "Course platform"."""
    model.fit(train_data, validation_data=test_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_steps=validation_steps, callbacks=[cosine(LEARNING_RATE, epochs)], verbose=2,
              **({"batch_size": batch_size} if batch_size else {}))
    return model
