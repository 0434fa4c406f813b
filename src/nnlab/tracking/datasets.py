"""A run's datasets as MLflow dataset inputs: where each came from, and a digest that stays cheap for big arrays."""

import hashlib
import os
from collections.abc import Mapping
from typing import Any

DATA_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}  # mlflow.data.context values
DIGEST_SAMPLE_BYTES = 4 << 20  # a dataset digest hashes shape, dtype and at most this many bytes of rows


def dataset_source(source: str):
    """An MLflow dataset source: a local path (a file or folder the data was read from), or where the data has
    no files of its own (bundled, generated) a code source that says so."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if not os.path.isabs(source):
        return CodeDatasetSource({"nnlab.data_origin": source})
    with warnings.catch_warnings():  # "" and "file" URIs both resolve to a local source, and MLflow says so
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(source)


def array_digest(*arrays: Any, budget: int = DIGEST_SAMPLE_BYTES) -> str:
    """A dataset fingerprint that stays cheap for big (or memory-mapped) image arrays: each array's shape and
    dtype, plus evenly spaced rows (the first and last among them) up to `budget` bytes per array."""
    import numpy as np

    sha = hashlib.sha256()
    for array in arrays:
        if array is None:
            continue
        array = np.asarray(array)
        sha.update(f"{array.shape}|{array.dtype.str}|".encode())
        if array.ndim == 0 or len(array) == 0:
            sha.update(np.ascontiguousarray(array).tobytes())
            continue
        rows = max(1, min(len(array), budget // max(1, array[0].nbytes)))
        picked = array if rows == len(array) else array[np.linspace(0, len(array) - 1, rows).round().astype(int)]
        sha.update(np.ascontiguousarray(picked).tobytes())
    return sha.hexdigest()[:16]


def context_of(dataset_input) -> str | None:
    """A dataset input's context (training, validation, test), from its tag."""
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    return next((t.value for t in dataset_input.tags if t.key == MLFLOW_DATASET_CONTEXT), None)


def log_datasets(client, run_id: str, splits: Mapping[str, Any], name: str, source: str) -> None:
    """The training, validation and test data as MLflow dataset inputs (the UI's Datasets column):
    `splits` maps train/val/test to (x, y) or None; each is logged as "<name>-<split>" with its context
    (training, validation, test), the source it came from and a digest of a sample (`array_digest`).
    Inputs the run already has are left out: `nnlab resume` logs the data of the run it reopens again."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    origin, have = dataset_source(source), dataset_inputs(client, run_id)
    inputs = []
    for split, arrays in splits.items():
        if arrays is None:
            continue
        x, y = arrays
        key = (f"{name}-{split}", array_digest(x, y), DATA_CONTEXTS.get(split, split))
        if key in have:
            continue
        dataset = mlflow.data.from_numpy(x, source=origin, targets=y, name=key[0], digest=key[1])
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, key[2])]))
    if inputs:
        _log_inputs_once_raced(client, run_id, inputs)


def _log_inputs_once_raced(client, run_id: str, inputs: list, tries: int = 3) -> None:
    """Log dataset inputs; a store that lost a race retries. The store looks a dataset up, then inserts it: two
    runs of a sweep that log the same data at once both insert, and the later one fails on the unique key
    (experiment, name, digest). By then the dataset exists, so the same call links it instead."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if attempt == tries - 1 or not _is_duplicate_key(error):
                raise


def _is_duplicate_key(error: Exception) -> bool:
    """A unique-key violation, as PostgreSQL (through the server), MySQL or SQLite words it."""
    text = str(error)
    return any(mark in text for mark in ("UniqueViolation", "duplicate key", "UNIQUE constraint", "Duplicate entry"))


def dataset_inputs(client, run_id: str) -> set[tuple[str, str, str | None]]:
    """(name, digest, context) of each dataset input the run has."""
    inputs = client.get_run(run_id).inputs
    return {(i.dataset.name, i.dataset.digest, context_of(i)) for i in (inputs.dataset_inputs if inputs else [])}
