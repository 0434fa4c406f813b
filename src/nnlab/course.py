"""The faces lab in the four-function shape an online GPU course grades: `load_train(path)`, `load_test(path)`,
`create_model(input_shape)`, `train_model(model, train_data, test_data, ...)`, built on nnlab's loader, pipeline
and ResNet builder, so it runs on any Keras backend and reads the same `labels.csv` + `final_files/` layout.

Save a copy as the course's script, or run it here: `python -m nnlab.course /path/to/faces [epochs]`.
The split is the course's: 75% training, 25% test, fixed seed. `nnlab +experiment=faces_age` is the same model
with MLflow tracking, a time budget and a validation split.
"""

import sys

import keras

from nnlab.config.data import AugmentConfig
from nnlab.data import load_dataset
from nnlab.data.augment import input_layers
from nnlab.data.pipeline import batches
from nnlab.models import build_model

IMAGE_SIZE = (96, 96)
TEST_SHARE = 0.25
SEED = 12345
RESNET = {"name": "resnet", "stages": [1, 2, 2, 1], "filters": [32, 64, 128, 256], "stem_filters": 32,
          "stem_kernel": 5, "stem_stride": 2, "dropout": 0.3}


def load_split(path: str, part: str):
    data = load_dataset({"name": "faces", "path": str(path), "image_size": list(IMAGE_SIZE), "test_split": TEST_SHARE,
                         "val_split": 0.0}, seed=SEED)
    return data.train if part == "train" else data.test


def load_train(path: str, batch_size: int = 32):
    """Training batches (uint8 pixels, ages), reshuffled every epoch; decoded once and cached by nnlab."""
    x, y = load_split(path, "train")
    return batches(x, y, batch_size, shuffle=True, seed=SEED)


def load_test(path: str, batch_size: int = 32):
    x, y = load_split(path, "test")
    return batches(x, y, batch_size, shuffle=False)


def create_model(input_shape, learning_rate: float = 1e-3) -> keras.Model:
    """nnlab's small ResNet with a linear age output. Pixels are scaled and flipped/shifted inside the model
    (training only), so the data functions hand over raw images. Huber loss, MAE in years as the metric."""
    augment = AugmentConfig(flip="horizontal", shift=0.05, zoom=0.1)
    model = build_model(RESNET, tuple(input_shape), "regression", 0, input_layers(1 / 255, augment, SEED))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.Huber(delta=5.0), metrics=["mae"])
    return model


def train_model(model: keras.Model, train_data, test_data, batch_size=None, epochs: int = 20,
                steps_per_epoch=None, validation_steps=None) -> keras.Model:
    """fit() with the course's arguments; `batch_size` applies only to arrays (the loaders above batch already)."""
    model.fit(train_data, validation_data=test_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
              validation_steps=validation_steps, verbose=2, **({"batch_size": batch_size} if batch_size else {}))
    return model


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m nnlab.course /path/to/faces [epochs]  (the folder with labels.csv, final_files/)")
    train_data, test_data = load_train(argv[0]), load_test(argv[0])
    model = train_model(create_model((*IMAGE_SIZE, 3)), train_data, test_data,
                        epochs=int(argv[1]) if len(argv) > 1 else 20)
    print(f"test MAE: {model.evaluate(test_data, verbose=0, return_dict=True)['mae']:.2f} years")


if __name__ == "__main__":
    main(sys.argv[1:])
