import numpy as np
import pytest
from data_fixtures import make_airline, make_boston

from nnlab.data import load_dataset
from nnlab.errors import DataNotFoundError, NnlabError


def load(name, path, **kw):
    return load_dataset({"name": name, "path": str(path), **kw}, seed=0)


@pytest.mark.parametrize("file,sep", [("housing.data", " "), ("housing.csv", ",")])
def test_boston_reads_whitespace_and_csv_with_the_keras_test_split(tmp_path, file, sep):
    make_boston(tmp_path / file, sep=sep)
    data = load("boston", tmp_path, val_split=0.1)
    assert data.task == "regression" and data.input_shape == (13,)
    assert data.sizes() == {"train": 363, "val": 41, "test": 102}
    raw = np.loadtxt(tmp_path / file, delimiter=None if sep == " " else ",")
    order = np.random.RandomState(113).permutation(506)
    assert np.allclose(data.test[1], raw[order[404:], 13], atol=1e-4)  # keras.datasets.boston_housing's split


def test_boston_standardizes_with_training_statistics_only(tmp_path):
    make_boston(tmp_path / "housing.data")
    data = load("boston", tmp_path, val_split=0.1)
    assert np.allclose(data.train[0].mean(axis=0), 0, atol=1e-5) and np.allclose(data.train[0].std(axis=0), 1, atol=1e-4)
    assert not np.allclose(data.test[0].mean(axis=0), 0, atol=1e-3)  # test rows are scaled, not refitted
    raw = load("boston", tmp_path, val_split=0.1, standardize_features=False)
    assert raw.train[0].mean() > 5


def test_boston_log_features_transform_only_the_named_columns(tmp_path):
    make_boston(tmp_path / "housing.data")
    plain = load("boston", tmp_path, val_split=0.0, standardize_features=False)
    logged = load("boston", tmp_path, val_split=0.0, standardize_features=False, log_features=["CRIM", "LSTAT"])
    crim, lstat = 0, 12
    assert np.allclose(logged.train[0][:, crim], np.log1p(np.maximum(plain.train[0][:, crim], 0)), atol=1e-5)
    assert np.allclose(logged.test[0][:, lstat], np.log1p(np.maximum(plain.test[0][:, lstat], 0)), atol=1e-5)
    assert np.array_equal(logged.train[0][:, 1:12], plain.train[0][:, 1:12])
    with pytest.raises(NnlabError, match="did you mean 'LSTAT'"):
        load("boston", tmp_path, log_features=["LSTATT"])


def test_boston_k_fold_covers_the_training_part_once(tmp_path):
    make_boston(tmp_path / "housing.data")
    folds = [load("boston", tmp_path, folds=4, fold=k, standardize_features=False) for k in range(4)]
    val_targets = np.sort(np.concatenate([d.val[1] for d in folds]))
    assert len(val_targets) == 404 and np.array_equal(val_targets, np.sort(np.concatenate([folds[0].train[1],
                                                                                          folds[0].val[1]])))
    with pytest.raises(NnlabError, match="dataset.fold=4 is outside 0..3"):
        load("boston", tmp_path, folds=4, fold=4)


def test_boston_wrong_table_and_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="housing.data or housing.csv"):
        load("boston", tmp_path)
    (tmp_path / "housing.data").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(NnlabError, match=r"shape \(2, 3\); a Boston housing table has 14 numeric columns"):
        load("boston", tmp_path)


def test_airline_windows_are_chronological_and_scaled_on_training_months(tmp_path):
    make_airline(tmp_path / "airline-passengers.csv")
    data = load("airline", tmp_path, window=12, test_split=0.25, val_split=0.1)
    assert data.input_shape == (12, 1) and data.task == "regression"
    assert data.info == {"train_months": 108, "test_months": 36}
    assert len(data.test[0]) == 36 and len(data.train[0]) + len(data.val[0]) == 96
    offset, scale = data.target_scale
    passengers = 120 + 2.5 * np.arange(144) + 30 * np.sin(2 * np.pi * np.arange(144) / 12)
    assert offset == pytest.approx(passengers[:108].round().min()) and offset + scale == pytest.approx(
        passengers[:108].round().max())
    # the last training window ends where the validation windows begin; the test targets come last
    assert np.allclose(data.train[0][-1, 1:, 0], data.val[0][0, :-1, 0])
    assert np.allclose(data.test[1] * scale + offset, passengers[108:].round())
    assert data.test[1].max() > 1.0  # the trend leaves the training range: scaled on train only


def test_airline_errors(tmp_path):
    make_airline(tmp_path / "airline-passengers.csv", months=20)
    with pytest.raises(NnlabError, match="too few for window=12"):
        load("airline", tmp_path, window=12)
    with pytest.raises(NnlabError, match="not 'Riders'; set dataset.column"):
        load("airline", tmp_path, column="Riders")


def write_csv(path, rows=60, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["size,colour,price,kind"]
    for i in range(rows):
        size = rng.uniform(1, 10)
        colour = ["red", "blue"][i % 2]
        lines.append(f"{size:.3f},{colour},{3 * size + (5 if colour == 'red' else 0):.3f},{'big' if size > 5 else 'small'}")
    lines.append("4.0,,12.0,small")  # a missing value
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_table_regression_one_hot_encodes_text_columns(tmp_path):
    file = write_csv(tmp_path / "shop.csv")
    data = load("csv_table", file, target="price", features=["size", "colour"], val_split=0.0)
    assert data.task == "regression" and data.input_shape == (3,)
    assert data.info == {"dropped_rows": 1, "features": "size,colour_blue,colour_red"}
    assert data.sizes()["train"] + data.sizes()["test"] == 60


def test_csv_table_infers_classification_from_a_text_target(tmp_path):
    file = write_csv(tmp_path / "shop.csv")
    data = load("csv_table", file, target="kind", val_split=0.0)
    assert data.task == "classification" and data.class_names == ["big", "small"]
    with pytest.raises(NnlabError, match="no column 'label'.*set dataset.target"):
        load("csv_table", file, target="label")
    with pytest.raises(DataNotFoundError, match="missing.csv does not exist"):
        load("csv_table", tmp_path / "missing.csv", target="kind")


def test_airline_baselines_and_year_on_year_differencing(tmp_path):
    make_airline(tmp_path / "airline-passengers.csv")
    passengers = (120 + 2.5 * np.arange(144) + 30 * np.sin(2 * np.pi * np.arange(144) / 12)).round()
    level = load("airline", tmp_path, window=12, test_split=0.25)
    offset, scale = level.target_scale
    assert np.allclose(level.baselines["seasonal_naive"] * scale + offset, passengers[96:132])
    assert np.allclose(level.baselines["naive"] * scale + offset, passengers[107:143])
    changes = load("airline", tmp_path, window=12, test_split=0.25, difference=12)
    assert changes.target_scale == (0.0, scale) and changes.input_shape == (12, 1)
    assert np.allclose(changes.test[1] * scale, passengers[108:] - passengers[96:132])
    assert np.allclose(changes.baselines["seasonal_naive"], 0.0)  # "same as a year ago" is no change
    # the same forecast errs by the same amount on either scale
    assert np.allclose(changes.test[1] - changes.baselines["naive"], level.test[1] - level.baselines["naive"])
    first_input = changes.train[0][0, :, 0] * scale  # changes over months 12..23, for the target at month 24
    assert np.allclose(first_input, passengers[12:24] - passengers[0:12])
