"""Datasets: a registry of loaders that return numpy arrays, so every Keras backend can train on them.

A loader takes its config's keys as keyword arguments plus `seed`, and returns a `Data`. The validation
split is carved from the training data (seeded); the test split is touched only by the final evaluation.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from nnlab.registry import Registry

DATASETS = Registry("dataset")

Split = tuple[np.ndarray, np.ndarray]


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split
    task: str = "classification"  # or "regression"
    class_names: list[str] | None = None
    rescale: float | None = None  # the model multiplies its inputs by this (uint8 pixels -> [0, 1])
    target_scale: tuple[float, float] | None = None  # (offset, scale): y_original = y * scale + offset
    info: dict[str, Any] = field(default_factory=dict)  # facts worth logging: skipped files, feature names…
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  # name -> naive test predictions, y's scale
    # What turns new raw inputs into model inputs, fitted on the training part (tables: feature names, means,
    # stds, one-hot categories; the airline series: window, scaler, differencing); JSON-serializable. Not in
    # `info`, whose entries become run params.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else 0

    def preprocessing_record(self) -> dict[str, Any]:
        """What `nnlab predict` needs to turn new inputs into this model's inputs and its outputs into answers:
        the task, class names, input shape, the rescaling the model applies itself, the target's scale and the
        loader's own `preprocessing`. JSON-serializable; a run logs it as preprocessing.json."""
        return {"version": 1, "task": self.task, "class_names": self.class_names,
                "input_shape": [int(d) for d in self.input_shape], "rescale": self.rescale,
                "target_scale": [float(v) for v in self.target_scale] if self.target_scale else None,
                **self.preprocessing}

    def preprocessing_json(self) -> str:
        import json

        return json.dumps(self.preprocessing_record(), indent=2)

    def sizes(self) -> dict[str, int]:
        sizes = {"train": len(self.train[0]), "test": len(self.test[0])}
        sizes["val"] = len(self.val[0]) if self.val is not None else 0
        return sizes


def split_train(
    x: np.ndarray, y: np.ndarray, *, val_split: float, limit: int | None, seed: int, stratify: bool
) -> tuple[Split, Split | None]:
    """Shuffle (seeded), keep at most `limit` examples, and hold out `val_split` of them for validation."""
    order = np.random.default_rng(seed).permutation(len(x))
    if limit is not None:
        order = order[: max(int(limit), 2)]
    x, y = x[order], y[order]
    if not val_split:
        return (x, y), None
    # Stratify only when every class can appear on both sides; tiny smoke runs may not allow it.
    labels = y if stratify and np.min(np.unique(y, return_counts=True)[1]) >= 2 else None
    try:
        x_tr, x_val, y_tr, y_val = train_test_split(
            x, y, test_size=val_split, random_state=seed, stratify=labels
        )
    except ValueError:
        x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=val_split, random_state=seed)
    return (x_tr, y_tr), (x_val, y_val)


def holdout(x: np.ndarray, y: np.ndarray, *, test_split: float, seed: int, stratify: bool) -> tuple[Split, Split]:
    """A seeded (stratified where possible) test split for datasets published without one."""
    return split_train(x, y, val_split=test_split, limit=None, seed=seed, stratify=stratify)  # type: ignore[return-value]


def load_dataset(cfg: Any, seed: int) -> Data:
    """Load from the dataset's typed config, or a mapping completed with its schema's defaults."""
    from nnlab.config import builder_kwargs

    kwargs = builder_kwargs("dataset", cfg)
    loader = DATASETS.get(kwargs.pop("name"))
    return loader(seed=seed, **kwargs)


# Import the loaders so that they register themselves.
from nnlab.data import bundled, curves, detection, folders, idx, scenes, segmentation, series, tables  # noqa: E402,F401
