"""The hand-written baseline for the runner-overhead benchmark: the `fashion_mlp` lab in plain Keras.

Same data files, split, model, optimizer, schedule, epochs and batch size as
`python -m nnlab +experiment=fashion_mlp`, but no Hydra, no MLflow, no plots: what a student would write.
Usage: python benchmarks/plain_keras.py DATA_DIR EPOCHS
"""

import gzip
import sys
import time

import numpy as np

start = time.perf_counter()
import keras  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def idx(path):
    raw = gzip.open(path).read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


root, epochs = sys.argv[1], int(sys.argv[2])
x = idx(f"{root}/train-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
y = idx(f"{root}/train-labels-idx1-ubyte.gz").astype("int64")
x_test = idx(f"{root}/t10k-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
y_test = idx(f"{root}/t10k-labels-idx1-ubyte.gz").astype("int64")
keras.utils.set_random_seed(42)
order = np.random.default_rng(42).permutation(len(x))
x_train, x_val, y_train, y_val = train_test_split(x[order], y[order], test_size=0.1, random_state=42,
                                                  stratify=y[order])

inputs = keras.Input((28, 28, 1))
h = keras.layers.Flatten()(inputs)
for units in (1024, 512, 256):
    h = keras.layers.Dense(units, use_bias=False)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Dropout(0.3)(h)
outputs = keras.layers.Dense(10, activation="softmax")(h)
model = keras.Model(inputs, outputs)
steps = epochs * -(-len(x_train) // 128)
model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=128, verbose=2)
loss, acc = model.evaluate(x_test, y_test, batch_size=128, verbose=0)
model.save("/tmp/plain_keras_fashion_mlp.keras")
print(f"plain keras: test_accuracy={acc:.4f} wall_s={time.perf_counter() - start:.1f}")
