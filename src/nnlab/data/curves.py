"""A generated 1-D regression for the dropout homework: few noisy points of a smooth curve, which a wide MLP
learns by heart (noise included) unless it is regularized.

Every split is drawn from the same process, y = sin(x) + N(0, noise²), so validation and test errors measure
what the network will do on new points; the noise-free curve on the test points is logged as the `truth`
baseline (`test_mae_truth`): the error no model can beat on average.
"""

import numpy as np

from nnlab.data import DATASETS, Data, split_train
from nnlab.data.tables import table_preprocessing


@DATASETS.register("noisy_curve")
def noisy_curve(
    *, seed: int, path: str | None, limit: int | None, val_split: float, count: int, test_count: int,
    x_range: list[float], noise: float,
) -> Data:
    """`count` noisy points (of which `val_split` validate) and `test_count` test points, x uniform in
    `x_range`; inputs (n, 1), targets (n,), float32. `path` is unused (nothing is read)."""
    rng = np.random.default_rng(seed)
    x, y = sample(rng, count, x_range, noise)
    x_test, y_test = sample(rng, test_count, x_range, noise)
    train, val = split_train(x, y, val_split=val_split, limit=limit, seed=seed, stratify=False)
    truth = np.sin(x_test[:, 0]).astype(np.float32)
    return Data(train, val, (x_test, y_test), "regression", None, baselines={"truth": truth},
                preprocessing=table_preprocessing(["x"], [["x", None]], None, "y"))  # predict: a CSV column x


def sample(rng: np.random.Generator, n: int, x_range: list[float], noise: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(x_range[0], x_range[1], size=(n, 1))
    y = np.sin(x[:, 0]) + rng.normal(0.0, noise, size=n)
    return x.astype(np.float32), y.astype(np.float32)
