"""Exercise 5: age from face photos, a regression (bar: test MAE <= 8 years; 7 is excellent).

Reads the platform's layout: PATH/labels.csv (file_name, real_age) and the photos in PATH/final_files/. The split
is the course's: 75% training, 25% test, fixed seed. Built on nnlab's faces loader (decoded once, cached), input
pipeline and ResNet builder (the `faces_age` experiment's network, measured there at test MAE 6.74 years), so it
runs on any Keras backend; flips, shifts, zooms and brightness changes are layers inside the model, active only in
training.
Grade it: nnlab course run exer_5.py PATH   (a layout of nnlab's copy: nnlab course prepare faces PATH)
"""

import keras

from nnlab.config.data import AugmentConfig
from nnlab.course.kit import cosine
from nnlab.data import load_dataset
from nnlab.data.augment import input_layers
from nnlab.data.pipeline import batches
from nnlab.models import build_model

IMAGE_SIZE = (96, 96)
TEST_SHARE = 0.25
SEED = 12345
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
RESNET = {"name": "resnet", "stages": [1, 2, 2, 1], "filters": [32, 64, 128, 256], "stem_filters": 32,
          "stem_kernel": 5, "stem_stride": 2, "dropout": 0.3}
AUGMENT = AugmentConfig(flip="horizontal", shift=0.05, zoom=0.1, brightness=0.1)


def load_split(path: str, part: str):
    data = load_dataset({"name": "faces", "path": str(path), "image_size": list(IMAGE_SIZE), "test_split": TEST_SHARE,
                         "val_split": 0.0}, seed=SEED)
    return data.train if part == "train" else data.test


def load_train(path: str, batch_size: int = BATCH_SIZE):
    """Training batches (uint8 pixels, ages), reshuffled every epoch; decoded once and cached by nnlab."""
    x, y = load_split(path, "train")
    return batches(x, y, batch_size, shuffle=True, seed=SEED)


def load_test(path: str, batch_size: int = BATCH_SIZE):
    x, y = load_split(path, "test")
    return batches(x, y, batch_size, shuffle=False)


def create_model(input_shape) -> keras.Model:
    """nnlab's small ResNet with a linear age output. Pixels are scaled and augmented inside the model (training
    only), so the data functions hand over raw images. Huber loss (quadratic within 5 years of the truth, linear
    for the outliers), MAE in years as the metric."""
    model = build_model(RESNET, tuple(input_shape), "regression", 0, input_layers(1 / 255, AUGMENT, SEED))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=keras.losses.Huber(delta=5.0), metrics=["mae"])
    return model


def train_model(model: keras.Model, train_data, test_data, batch_size=None, epochs: int = 20,
                steps_per_epoch=None, validation_steps=None) -> keras.Model:
    """fit() with the platform's arguments; `batch_size` applies only to arrays (the loaders above batch already)."""
    model.fit(train_data, validation_data=test_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_steps=validation_steps, callbacks=[cosine(LEARNING_RATE, epochs, warmup=1)], verbose=2,
              **({"batch_size": batch_size} if batch_size else {}))
    return model
