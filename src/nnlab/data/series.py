"""Series: the airline-passengers months as windows of history → the next month, and the same windows cut
from a new series for `nnlab predict`.

The split is chronological and the scaler is fitted on the training months only, so the test scores are what
a model would get on months it has never seen.
"""

import numpy as np

from nnlab.data import DATASETS, Data
from nnlab.data.tables import find_table
from nnlab.errors import NnlabError


@DATASETS.register("airline")
def airline(
    *, seed: int, path: str | None, column: str, window: int, test_split: float,
    val_split: float, scale: str, difference: int, limit: int | None,
) -> Data:
    """A monthly series (CSV: Month,Passengers) as windows of `window` months → the next month. The split is
    chronological (the last `test_split` of the months are the test targets) and the scaler sees the
    training months only. `difference`=k models the change over k months (12: against the same month a year
    earlier), inputs and target alike, which spares the model from extrapolating a trend; errors are the same
    as on the level. Metrics are in scaled units; `target_scale` maps errors back to passengers."""
    series = read_series(path, column)
    cut = round(len(series) * (1 - test_split))
    if cut <= window + difference + 1 or len(series) - cut < 1:
        raise NnlabError(f"The airline series has {len(series)} values: too few for window={window}, "
                         f"difference={difference} with test_split={test_split}; shorten dataset.window.")
    offset, factor = fit_scaler(series[:cut], scale)
    level = (series - offset) / factor
    # months t with a full window of (differenced) history: the input is values [t-window, t), the target at t
    months = np.arange(window + difference, len(level))
    reference = level[months - difference] if difference else np.zeros(len(months))
    x = windows(level, months, window, difference)
    y = (level[months] - reference).astype(np.float32)
    # What a forecast must beat: last month's value, and the value of the same month a year earlier.
    guesses = {"naive": level[months - 1] - reference}
    if months.min() >= 12:
        guesses["seasonal_naive"] = level[months - 12] - reference
    test = months >= cut
    train_x, train_y = x[~test], y[~test]
    if limit is not None:  # keep the most recent windows: the chronology must survive
        train_x, train_y = train_x[-int(limit):], train_y[-int(limit):]
    n_val = round(len(train_x) * val_split)
    val = (train_x[len(train_x) - n_val:], train_y[len(train_y) - n_val:]) if n_val else None
    train = (train_x[: len(train_x) - n_val], train_y[: len(train_y) - n_val])
    baselines = {k: v[test].astype(np.float32) for k, v in guesses.items()}
    prep = {"inputs": "series", "column": column, "window": window, "difference": difference,
            "offset": float(offset), "factor": float(factor)}
    return Data(train, val, (x[test], y[test]), "regression", None,
                target_scale=(0.0 if difference else float(offset), float(factor)),
                info={"train_months": cut, "test_months": len(series) - cut}, baselines=baselines,
                preprocessing=prep)


def read_series(path: str | None, column: str) -> np.ndarray:
    import pandas as pd

    file = find_table(path, ("airline-passengers.csv", "international-airline-passengers.csv", "AirPassengers.csv"),
                      "the airline-passengers CSV (Month,Passengers)")
    frame = pd.read_csv(file)
    if column not in frame.columns:
        raise NnlabError(f"{file} has columns {list(frame.columns)}, not '{column}'; set dataset.column.")
    series = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    if np.isnan(series).any():
        raise NnlabError(f"{file}: {int(np.isnan(series).sum())} values of '{column}' are not numbers; fix them.")
    return series


def fit_scaler(values: np.ndarray, scale: str) -> tuple[float, float]:
    if scale == "minmax":
        return values.min(), max(values.max() - values.min(), 1e-12)
    if scale == "standard":
        return values.mean(), max(values.std(), 1e-12)
    if scale == "none":
        return 0.0, 1.0
    raise NnlabError(f"dataset.scale='{scale}' is not one of minmax, standard, none; fix the config.")


def series_inputs(series: np.ndarray, prep: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A new series (original units) → (windows, the index of the month each forecasts, what to add to a
    forecast in original units): every month with a full window of history, plus the month after the last."""
    window, difference = int(prep["window"]), int(prep["difference"])
    if len(series) < window + difference:
        raise NnlabError(f"The series has {len(series)} values; the model needs at least {window + difference} "
                         f"(window={window}, difference={difference}).")
    level = (np.asarray(series, np.float64) - prep["offset"]) / prep["factor"]
    months = np.arange(window + difference, len(level) + 1)
    x = windows(level, months, window, difference)
    # a differenced model forecasts the change over `difference` months: add the value it changes from
    base = np.asarray(series, np.float64)[months - difference] if difference else np.zeros(len(months))
    return x, months, base


def windows(level: np.ndarray, months: np.ndarray, window: int, difference: int) -> np.ndarray:
    """Each month's input, (months, window, 1): the `window` values before it, as changes over `difference`
    months when differenced (the change into month t is level[t] - level[t - difference])."""
    changes = level[difference:] - level[:-difference] if difference else level
    return np.stack([changes[t - difference - window: t - difference] for t in months])[..., None].astype(np.float32)
