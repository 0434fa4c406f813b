"""Exercise 2: Fashion-MNIST with a convolutional network trained with Adam (bar: test accuracy >= 87%).

Reads the platform's layout: PATH/train_features.npy (uint8, n x 28 x 28) with PATH/train_target.npy, and
PATH/test_features.npy with PATH/test_target.npy. Built on nnlab's input pipeline and CNN builder (the
`fashion_cnn_adam` experiment's network), so it runs on any Keras backend.
Grade it: nnlab course run exer_2.py PATH   (a layout of nnlab's copy: nnlab course prepare fashion_mnist PATH)
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
CNN = {"name": "cnn", "blocks": [{"filters": 32, "kernel": 3, "convs": 2, "pool": "max", "dropout": 0.1},
                                 {"filters": 64, "kernel": 3, "convs": 2, "pool": "max", "dropout": 0.2}],
       "dense": [512], "batch_norm": True, "dropout": 0.3}


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
    """Two blocks of two 3x3 convolutions (32, 64 filters) with batch norm, max pooling and dropout, then a
    512-unit dense layer; Adam, whose learning rate train_model anneals with a cosine."""
    layers = input_layers(1 / 255, AugmentConfig(), SEED)  # uint8 pixels scaled inside the model
    model = build_model(CNN, tuple(input_shape), "classification", CLASSES, layers)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_model(model: keras.Model, train_data, test_data, batch_size=None, epochs: int = 10,
                steps_per_epoch=None, validation_steps=None) -> keras.Model:
    """fit() with the platform's arguments; `batch_size` applies only to arrays (load_train batches already)."""
    model.fit(train_data, validation_data=test_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_steps=validation_steps, callbacks=[cosine(LEARNING_RATE, epochs)], verbose=2,
              **({"batch_size": batch_size} if batch_size else {}))
    return model
