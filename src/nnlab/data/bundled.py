"""Datasets that ship inside installed packages: they work offline on a fresh machine."""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nnlab.data import DATASETS, Data, split_train


@DATASETS.register("digits")
def digits(
    *, seed: int, path: str | None, limit: int | None, val_split: float,
    test_split: float,
) -> Data:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], as 8x8x1 images; `path` is unused."""
    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int64")
    x_pool, x_test, y_pool, y_test = train_test_split(
        x, y, test_size=test_split, random_state=seed, stratify=y
    )
    train, val = split_train(x_pool, y_pool, val_split=val_split, limit=limit, seed=seed, stratify=True)
    return Data(train, val, (x_test, y_test), "classification", [str(i) for i in range(10)])
