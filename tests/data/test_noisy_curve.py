"""The dropout homework's generated regression (`noisy_curve`): sizes, noise, seeding, and its config checks."""

import numpy as np
import pytest

from nnlab.config.data import NoisyCurveConfig
from nnlab.data import load_dataset
from nnlab.errors import ConfigError


def curve(seed=0, **options):
    return load_dataset({"name": "noisy_curve", **options}, seed=seed)


def test_splits_have_the_configured_sizes_and_one_input_column():
    data = curve(count=50, test_count=300)
    assert data.sizes() == {"train": 10, "val": 40, "test": 300}  # val_split 0.8 of the noisy pool
    assert data.task == "regression" and data.input_shape == (1,)
    assert data.train[0].dtype == np.float32 and data.train[1].shape == (10,)


def test_points_lie_in_x_range_and_scatter_around_the_sine_by_the_noise():
    data = curve(count=2000, test_count=4000, x_range=[-1.0, 2.0], noise=0.3)
    x, y = data.test
    assert x.min() >= -1.0 and x.max() <= 2.0
    residual = y - np.sin(x[:, 0])
    assert abs(residual.std() - 0.3) < 0.02 and abs(residual.mean()) < 0.02
    # the noise-free curve is the test baseline: its MAE is the noise's, about 0.8 * std
    assert np.mean(np.abs(data.baselines["truth"] - y)) == pytest.approx(0.3 * np.sqrt(2 / np.pi), abs=0.02)


def test_noise_zero_gives_the_curve_itself():
    x, y = curve(noise=0.0).train
    assert np.allclose(y, np.sin(x[:, 0]), atol=1e-6)


def test_same_seed_same_points_other_seed_other_points():
    a, b, c = curve(seed=3), curve(seed=3), curve(seed=4)
    assert np.array_equal(a.train[0], b.train[0]) and np.array_equal(a.test[1], b.test[1])
    assert not np.array_equal(a.train[0], c.train[0])


def test_limit_keeps_at_most_that_many_points_of_the_pool():
    assert sum(len(s[0]) for s in (curve(limit=10).train, curve(limit=10).val)) == 10


@pytest.mark.parametrize("options, message", [
    ({"x_range": [2.0, 1.0]}, r"dataset.x_range=\[2.0, 1.0\] must be \[low, high\]"),
    ({"noise": -0.1}, "dataset.noise=-0.1 is out of range"),
    ({"count": 1}, "dataset.count=1 is out of range"),
])
def test_bad_values_get_one_sentence_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        NoisyCurveConfig(**options)
