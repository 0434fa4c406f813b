"""What a course script's load_train / load_test may hand over, and how the grader reads it the platform's way:
(features, target) arrays, a tf.data.Dataset, a keras.utils.PyDataset (ImageDataGenerator flows are ones), or any
other iterable of (features, target[, weights]) batches."""

import itertools
from typing import Any

import numpy as np

from nnlab.errors import NnlabError

KINDS = "(features, target) arrays, a tf.data.Dataset, a keras.utils.PyDataset or an ImageDataGenerator flow"


def is_arrays(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) in (2, 3) and all(hasattr(a, "shape") for a in data[:2])


def is_indexable(data: Any) -> bool:
    """PyDatasets and ImageDataGenerator flows: batch i is data[i], for i < len(data)."""
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and not is_arrays(data)


def split_batch(batch: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return np.asarray(batch[0]), np.asarray(batch[1])
    raise NnlabError(f"{where} gives batches of {type(batch).__name__}, not (features, target) pairs; return "
                     f"{KINDS}.")


def peek(data: Any, where: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """The first batch's (features, target), and the data to hand on: a generator is consumed by looking, so its
    first batch is put back in front."""
    if is_arrays(data):
        return np.asarray(data[0][:1]), np.asarray(data[1][:1]), data
    if is_indexable(data):
        if len(data) == 0:
            raise NnlabError(f"{where} returned no batches; check the path it reads and its layout.")
        return (*split_batch(data[0], where), data)
    try:
        iterator = iter(data)
    except TypeError:
        raise NnlabError(f"{where} returned a {type(data).__name__}; return {KINDS}.") from None
    try:
        first = next(iterator)
    except StopIteration:
        raise NnlabError(f"{where} returned no batches; check the path it reads and its layout.") from None
    x, y = split_batch(first, where)
    if iterator is data:  # a generator: what was taken must be given back
        data = itertools.chain([first], iterator)
    return x, y, data


def predict_all(model, data: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(targets, predictions) over one pass of the test data, batch by batch as the data comes (a shuffling flow
    keeps each batch's images and targets together)."""
    if is_arrays(data):
        return np.asarray(data[1]), np.asarray(model.predict(data[0], verbose=0))
    if is_infinite(data):
        raise NnlabError(f"{where} returns a dataset that repeats forever; drop .repeat() from the test data, so "
                         "one pass over it is the test set.")
    batches = (data[i] for i in range(len(data))) if is_indexable(data) else iter(data)
    targets, predictions = [], []
    for batch in batches:
        x, y = split_batch(batch, where)
        targets.append(y)
        predictions.append(np.asarray(model.predict_on_batch(x)))
    if not targets:
        raise NnlabError(f"{where} returned no test batches; check the path it reads and its layout.")
    return np.concatenate(targets), np.concatenate(predictions)


def is_infinite(data: Any) -> bool:
    cardinality = getattr(data, "cardinality", None)
    if cardinality is None or is_indexable(data):
        return False
    try:
        return int(cardinality()) == -1  # tf.data.INFINITE_CARDINALITY
    except (TypeError, ValueError):
        return False


def class_indices(y: np.ndarray) -> np.ndarray:
    """Targets as class indices: one-hot rows (class_mode='categorical') become their argmax."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    return y.reshape(-1).astype(np.int64)


def predicted_classes(p: np.ndarray) -> np.ndarray:
    """The class each output row predicts: the likeliest, or P > 0.5 for one sigmoid unit."""
    p = np.asarray(p).reshape(len(p), -1)
    return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else np.argmax(p, axis=1)


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """The platform's test score: accuracy, or the mean absolute error."""
    if metric == "accuracy":
        return float(np.mean(predicted_classes(p) == class_indices(y)))
    return float(np.mean(np.abs(np.asarray(p, np.float64).reshape(-1) - np.asarray(y, np.float64).reshape(-1))))
