"""Exercise 4: fruit photos with a residual network (bar: test accuracy >= 99% within 30 minutes).

Reads the platform's layout: PATH/<class>/<photos>, one folder per class. A seeded, stratified 25% of each class
is the test set (what students get with ImageDataGenerator's validation_split=0.25). Built on nnlab's image-folder
loader (decoded once, cached), input pipeline and ResNet builder (the `fruits_resnet` experiment's network); flips,
small rotations and zooms are layers inside the model, active only in training. Runs on any Keras backend.
Grade it: nnlab course run exer_4.py PATH   (a layout of nnlab's copy: nnlab course prepare fruits PATH)
"""

import keras

from nnlab.config.data import AugmentConfig
from nnlab.course.kit import cosine
from nnlab.data import load_dataset
from nnlab.data.augment import input_layers
from nnlab.data.pipeline import batches
from nnlab.models import build_model
from nnlab.tasks import get_task

SEED = 12345
IMAGE_SIZE = (64, 64)
TEST_SHARE = 0.25
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
# Three stages of one basic block each; the stride-2 stem takes 64 px photos to 32 px first: a quarter of the compute.
RESNET = {"name": "resnet", "stages": [1, 1, 1], "filters": [32, 64, 128], "stem_filters": 32, "stem_stride": 2,
          "dropout": 0.2}
AUGMENT = AugmentConfig(flip="horizontal", rotation=0.05, zoom=0.1)
CLASS_NAMES: list[str] = []  # the class folders load_train found: create_model's number of outputs


def load_split(path: str, part: str):
    """(uint8 photos, class indices) of `part`: the class folders right under PATH, split seeded and stratified."""
    data = load_dataset({"name": "image_folder", "path": str(path), "train_dir": ".", "test_dir": None,
                         "image_size": list(IMAGE_SIZE), "test_split": TEST_SHARE, "val_split": 0.0}, seed=SEED)
    CLASS_NAMES[:] = data.class_names
    return data.train if part == "train" else data.test


def load_train(path: str):
    x, y = load_split(path, "train")
    return batches(x, y, BATCH_SIZE, shuffle=True, seed=SEED)


def load_test(path: str):
    x, y = load_split(path, "test")
    return batches(x, y, BATCH_SIZE, shuffle=False)


def create_model(input_shape) -> keras.Model:
    """nnlab's small ResNet (v1.5 basic blocks, 32-64-128 filters, global average pooling, dropout 0.2)."""
    if not CLASS_NAMES:
        raise RuntimeError("create_model takes the number of classes from the data: call load_train(path) first")
    layers = input_layers(1 / 255, AUGMENT, SEED)
    model = build_model(RESNET, tuple(input_shape), "classification", len(CLASS_NAMES), layers)
    loss = get_task("classification").default_loss(len(CLASS_NAMES))  # the head's: one sigmoid unit for 2 classes
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss, metrics=["accuracy"])
    return model


def train_model(model: keras.Model, train_data, test_data, batch_size=None, epochs: int = 15,
                steps_per_epoch=None, validation_steps=None) -> keras.Model:
    """fit() with the platform's arguments; `batch_size` applies only to arrays (load_train batches already)."""
    model.fit(train_data, validation_data=test_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_steps=validation_steps, callbacks=[cosine(LEARNING_RATE, epochs, warmup=1)], verbose=2,
              **({"batch_size": batch_size} if batch_size else {}))
    return model
