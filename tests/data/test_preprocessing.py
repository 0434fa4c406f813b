"""Data.preprocessing: what the table loaders fitted on the training part, recorded so that new raw rows become the
same model inputs later (nnlab predict); applying the record to the raw test rows gives the loader's test arrays."""

import json

import numpy as np
import pandas as pd
import pytest
from data_fixtures import make_airline, make_boston

from nnlab.data import load_dataset
from nnlab.data.series import series_inputs
from nnlab.data.tables import BOSTON_COLUMNS, table_inputs


def load(name, path, **kw):
    return load_dataset({"name": name, "path": str(path), **kw}, seed=0)


def json_round_trip(record: dict) -> dict:
    return json.loads(json.dumps(record))


@pytest.mark.parametrize("options", [{}, {"log_features": ["CRIM", "LSTAT"]}, {"standardize_features": False}])
def test_boston_raw_test_rows_through_the_record_are_the_loaders_test_arrays(tmp_path, options):
    make_boston(tmp_path / "housing.data", rows=120)
    data = load("boston", tmp_path, **options)
    raw = np.loadtxt(tmp_path / "housing.data")
    rows = raw[np.random.RandomState(113).permutation(120)[96:]]
    frame = pd.DataFrame(rows, columns=BOSTON_COLUMNS + ["MEDV"])
    record = json_round_trip(data.preprocessing_record())
    assert np.array_equal(table_inputs(frame, record, "rows"), data.test[0])  # bit for bit
    assert record["features"] == BOSTON_COLUMNS and record["target"] == "MEDV"
    assert (record["mean"] is None) == (options.get("standardize_features") is False)


def test_boston_means_come_from_the_training_part_only(tmp_path):
    make_boston(tmp_path / "housing.data", rows=120)
    data = load("boston", tmp_path, standardize_features=False)
    scaled = load("boston", tmp_path)
    assert np.allclose(scaled.preprocessing["mean"], data.train[0].mean(axis=0), rtol=1e-6)
    assert not np.allclose(scaled.preprocessing["mean"], data.test[0].mean(axis=0), rtol=1e-3)


def test_csv_table_one_hot_sources_rebuild_the_test_arrays_and_unseen_categories_set_no_column(tmp_path):
    rng = np.random.default_rng(0)

    def frame(n):
        return pd.DataFrame({"size": rng.normal(10, 3, n).round(2), "colour": rng.choice(["red", "green", "blue"], n),
                             "shape": rng.choice(["round", "square"], n), "label": rng.choice(["a", "b", "c"], n)})

    frame(60).to_csv(tmp_path / "train.csv", index=False)
    test = frame(10)
    test.to_csv(tmp_path / "test.csv", index=False)
    data = load("csv_table", tmp_path / "train.csv", test_path=str(tmp_path / "test.csv"), target="label")
    record = json_round_trip(data.preprocessing_record())
    assert record["features"] == ["size", "colour", "shape"] and record["class_names"] == ["a", "b", "c"]
    assert record["sources"][0] == ["size", None] and ["colour", "blue"] in record["sources"]
    assert np.array_equal(table_inputs(test, record, "test.csv"), data.test[0])
    odd = table_inputs(pd.DataFrame({"size": [10.0], "colour": ["purple"], "shape": ["round"]}), record, "odd")
    colours = [i for i, (f, _) in enumerate(record["sources"]) if f == "colour"]
    plain = table_inputs(pd.DataFrame({"size": [10.0], "colour": ["red"], "shape": ["round"]}), record, "plain")
    zero = (0 - np.asarray(record["mean"]))[colours] / np.asarray(record["std"])[colours]
    assert np.allclose(odd[0, colours], zero) and not np.allclose(plain[0, colours], zero)


def test_airline_series_windows_through_the_record_are_the_loaders_test_windows(tmp_path):
    path = make_airline(tmp_path / "airline-passengers.csv", months=60)
    data = load("airline", tmp_path, window=6, difference=12, scale="standard")
    record = json_round_trip(data.preprocessing_record())
    series = pd.read_csv(path)["Passengers"].to_numpy(np.float64)
    x, months, base = series_inputs(series, record)
    assert months[0] == 18 and months[-1] == 60  # every full window, and the month after the last
    n = len(data.test[0])
    assert np.array_equal(x[-n - 1:-1], data.test[0])
    assert np.array_equal(base, series[months - 12]) and record["target_scale"] == [0.0, record["factor"]]


def test_an_image_loaders_record_names_its_classes_shape_and_rescaling(tmp_path):
    record = json_round_trip(load_dataset({"name": "digits"}, seed=0).preprocessing_record())
    assert record == {"version": 1, "task": "classification", "class_names": [str(k) for k in range(10)],
                      "input_shape": [8, 8, 1], "rescale": None, "target_scale": None}
