import numpy as np

from nnlab.data import load_dataset, split_train


def test_digits_is_bundled_and_split_three_ways():
    data = load_dataset({"name": "digits", "path": None, "limit": None, "val_split": 0.1, "test_split": 0.2},
                        seed=1)
    sizes = data.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360
    assert data.input_shape == (8, 8, 1)
    assert data.num_classes == 10
    assert data.train[0].max() <= 1.0


def test_split_without_validation():
    x, y = np.zeros((20, 2)), np.arange(20) % 2
    train, val = split_train(x, y, val_split=0.0, limit=None, seed=0, stratify=True)
    assert val is None and len(train[0]) == 20


def test_split_falls_back_when_a_class_is_too_rare_to_stratify():
    x, y = np.zeros((10, 2)), np.array([0] * 9 + [1])
    train, val = split_train(x, y, val_split=0.2, limit=None, seed=0, stratify=True)
    assert len(train[0]) == 8 and len(val[0]) == 2
