"""Tables: Boston housing and any CSV a user brings (the airline-passengers series is `nnlab.data.series`).

Every statistic used to scale the inputs (mean, std, min, max) is fitted on the training part only, so the
validation and test scores are what a model would get on data it has never seen.
"""

import logging
from pathlib import Path

import numpy as np

from nnlab.data import DATASETS, Data, holdout, split_train
from nnlab.errors import DataNotFoundError, NnlabError, unknown_name

log = logging.getLogger(__name__)

BOSTON_COLUMNS = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "B", "LSTAT"]
BOSTON_FILES = ("housing.data", "housing.csv", "boston.csv", "BostonHousing.csv")


def find_table(path: str | None, names: tuple[str, ...], layout: str) -> Path:
    """`path` itself when it is a file, else the first of `names` inside it."""
    if path is None:
        raise NnlabError(f"dataset.path is not set; set it (or NNLAB_DATA_DIR) to {layout}.")
    root = Path(path).expanduser()
    if root.is_file():
        return root
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataNotFoundError(f"{layout} is missing: put {' or '.join(names)} in {root}, "
                            "or point dataset.path at the file.")


def fit_standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)  # a constant column stays at zero instead of dividing by zero


def standardize(train: np.ndarray, *others: np.ndarray | None) -> list[np.ndarray | None]:
    mean, std = fit_standardizer(train)
    return [(a - mean) / std if a is not None else None for a in (train, *others)]


def scale_split(train, val, test, scale: bool) -> tuple:
    """The splits standardized with the training part's statistics, and those statistics (None unscaled)."""
    if not scale:
        return train, val, test, None
    mean, std = fit_standardizer(train[0])
    x_tr, x_val, x_te = ((a - mean) / std if a is not None else None
                         for a in (train[0], None if val is None else val[0], test[0]))
    return (x_tr, train[1]), (None if val is None else (x_val, val[1])), (x_te, test[1]), (mean, std)


def table_preprocessing(features: list[str], sources: list[list], stats, target: str,
                        log_features: list[str] = ()) -> dict:
    """Data.preprocessing of a table: the raw feature columns a new row needs, where each model input comes from
    ([feature, None] for a number, [feature, value] for a one-hot column), the log1p columns, and the training
    part's means and stds (null when not standardized)."""
    return {"inputs": "table", "features": list(features), "sources": [list(s) for s in sources],
            "log_features": list(log_features), "target": target,
            "mean": None if stats is None else [float(v) for v in stats[0]],
            "std": None if stats is None else [float(v) for v in stats[1]]}


def table_inputs(frame, prep: dict, where: str) -> np.ndarray:
    """New rows (a DataFrame holding the raw feature columns) → model inputs, as the loader made them: numbers
    as float32, one-hot columns (a category unseen in training sets none of its columns), log1p columns, then
    the training part's standardization."""
    import pandas as pd

    missing = [f for f in prep["features"] if f not in frame.columns]
    if missing:
        raise NnlabError(f"{where} lacks the feature columns {missing} that the model was trained on (it needs "
                         f"{', '.join(prep['features'])}); add them to the table.")
    columns = []
    for feature, value in prep["sources"]:
        column = frame[feature]
        if value is not None:
            columns.append((column.astype(str) == value).to_numpy(np.float32))
            continue
        numbers = pd.to_numeric(column, errors="coerce")
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise NnlabError(f"{where}: column '{feature}' holds {column.iloc[row]!r} in data row {row}, not a number; "
                             "fix or delete that row.")
        columns.append(numbers.to_numpy(np.float32))
    x = np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(frame), 0), np.float32)
    names = [f for f, v in prep["sources"]]
    for feature in prep.get("log_features") or []:
        i = names.index(feature)
        x[:, i] = np.log1p(np.maximum(x[:, i], 0))
    if prep.get("mean") is not None:
        x = (x - np.asarray(prep["mean"], np.float32)) / np.asarray(prep["std"], np.float32)
    return x


def kfold_split(x: np.ndarray, y: np.ndarray, folds: int, fold: int, seed: int):
    from sklearn.model_selection import KFold

    if not 0 <= fold < folds:
        raise NnlabError(f"dataset.fold={fold} is outside 0..{folds - 1}; pick one of the {folds} folds.")
    train_idx, val_idx = list(KFold(folds, shuffle=True, random_state=seed).split(x))[fold]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


@DATASETS.register("boston")
def boston(
    *, seed: int, path: str | None, limit: int | None, val_split: float,
    test_split: float, split_seed: int, folds: int | None, fold: int,
    standardize_features: bool, log_features: tuple[str, ...],
) -> Data:
    """UCI `housing.data` (whitespace) or the same 14 columns as CSV; target MEDV in $1000s. The test split is
    `keras.datasets.boston_housing`'s (shuffle with seed 113, last 20%), so scores compare with the textbook's.
    With `folds`, validation is fold `fold` of a k-fold split of the training part instead of `val_split`.
    `log_features` (e.g. [CRIM, LSTAT]) takes log(1 + x) of those skewed columns before standardizing."""
    file = find_table(path, BOSTON_FILES, "the Boston housing table (housing.data: 506 rows x 14 columns)")
    table = read_numeric(file)
    if table.ndim != 2 or table.shape[1] != 14:
        raise NnlabError(f"{file} has shape {table.shape}; a Boston housing table has 14 numeric columns "
                         "(13 features, then MEDV). Replace it with the UCI housing.data.")
    x, y = table[:, :13].astype(np.float32), table[:, 13].astype(np.float32)
    for column in log_features:
        i = column_index(column, BOSTON_COLUMNS)
        x[:, i] = np.log1p(np.maximum(x[:, i], 0))
    order = np.random.RandomState(split_seed).permutation(len(x))
    cut = int(len(x) * (1 - test_split))
    (x_pool, y_pool), test = (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])
    if folds:
        train, val = kfold_split(x_pool, y_pool, int(folds), int(fold), seed)
    else:
        train, val = split_train(x_pool, y_pool, val_split=val_split, limit=limit, seed=seed, stratify=False)
    train, val, test, stats = scale_split(train, val, test, standardize_features)
    mean = np.full(len(test[1]), train[1].mean(), np.float32)  # the "no model" price: what MAE is judged against
    prep = table_preprocessing(BOSTON_COLUMNS, [[c, None] for c in BOSTON_COLUMNS], stats, "MEDV", log_features)
    return Data(train, val, test, "regression", None, info={"features": ",".join(BOSTON_COLUMNS)},
                baselines={"train_mean": mean}, preprocessing=prep)


def column_index(name: str, columns: list[str]) -> int:
    if name not in columns:
        raise NnlabError(unknown_name("Boston column", name, columns))
    return columns.index(name)


def read_numeric(file: Path) -> np.ndarray:
    first = file.read_text(encoding="utf-8", errors="replace").lstrip().split("\n", 1)[0]
    delimiter = "," if "," in first else None  # None: any whitespace, as in the UCI file
    skip = 0 if first.replace(",", " ").split()[0].lstrip("-").replace(".", "", 1).isdigit() else 1
    try:
        return np.loadtxt(file, delimiter=delimiter, skiprows=skip, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise NnlabError(f"{file} is not a numeric table ({err}); fix or replace the file.") from err


@DATASETS.register("csv_table")
def csv_table(
    *, seed: int, path: str | None, target: str, features: list[str] | None,
    task: str, sep: str | None, test_path: str | None, limit: int | None,
    val_split: float, test_split: float, standardize_features: bool,
) -> Data:
    """Any CSV with a header: `target` is the column to predict, `features` the inputs (default: the rest).
    Text columns are one-hot encoded; rows with missing values are dropped and counted. `task: auto` means
    classification for a text target or a whole-number one with at most 20 values, regression otherwise."""
    if path is None:
        raise NnlabError("dataset.path is not set; set it to your CSV file (dataset.path=/data/table.csv).")
    file = Path(path).expanduser()
    frame, dropped = read_frame(file, sep)
    test_frame, test_dropped = read_frame(Path(test_path).expanduser(), sep) if test_path else (None, 0)
    if target not in frame.columns:
        raise NnlabError(f"{file} has no column '{target}' (its columns: {', '.join(map(str, frame.columns))}); "
                         "set dataset.target.")
    x, y, class_names, kind, feature_names, sources = table_arrays(frame, test_frame, target, features, task, file)
    if test_frame is not None:
        pool, test = (x[: len(frame)], y[: len(frame)]), (x[len(frame):], y[len(frame):])
    else:
        pool, test = holdout(x, y, test_split=test_split, seed=seed, stratify=class_names is not None)
    train, val = split_train(*pool, val_split=val_split, limit=limit, seed=seed, stratify=class_names is not None)
    train, val, test, stats = scale_split(train, val, test, standardize_features)
    info = {"dropped_rows": dropped + test_dropped, "features": ",".join(feature_names)}
    prep = table_preprocessing(list(dict.fromkeys(f for f, _ in sources)), sources, stats, target)
    return Data(train, val, test, kind, class_names, info=info, preprocessing=prep)


def read_frame(file: Path, sep: str | None):
    import pandas as pd

    if not file.is_file():
        raise DataNotFoundError(f"CSV file {file} does not exist; fix dataset.path / dataset.test_path.")
    try:
        frame = pd.read_csv(file, sep=sep, engine="python" if sep is None else "c")
    except (ValueError, pd.errors.ParserError) as err:
        raise NnlabError(f"Cannot parse {file} as CSV ({err}); set dataset.sep or fix the file.") from err
    clean = frame.dropna()
    if len(clean) < len(frame):
        log.warning("%s: dropped %d rows with missing values", file, len(frame) - len(clean))
    return clean, len(frame) - len(clean)


def table_arrays(frame, test_frame, target: str, features: list[str] | None, task: str, file: Path):
    import pandas as pd

    both = frame if test_frame is None else pd.concat([frame, test_frame], ignore_index=True)
    names = list(features) if features else [c for c in both.columns if c != target]
    unknown = [c for c in names if c not in both.columns]
    if unknown:
        raise NnlabError(f"dataset.features names {unknown}, which are not columns of {file}.")
    inputs = pd.get_dummies(both[names], dtype=np.float32)  # categories are vocabulary, not statistics
    sources = input_sources(both[names], list(inputs.columns))
    column = both[target]
    if task == "auto":
        whole = pd.api.types.is_integer_dtype(column) and column.nunique() <= 20
        task = "classification" if whole or not pd.api.types.is_numeric_dtype(column) else "regression"
    targets = {"classification": class_targets, "regression": numeric_targets}  # the tasks a table serves
    if task not in targets:
        raise NnlabError(f"dataset.task='{task}' is not one a table serves; use classification, regression or auto.")
    y, class_names = targets[task](column, target, file)
    return inputs.to_numpy(np.float32), y, class_names, task, list(inputs.columns), sources


def input_sources(frame, columns: list[str]) -> list[list]:
    """Where each of get_dummies' output columns comes from: [feature, None] for a column kept as a number,
    [feature, str(value)] for the one-hot column of that category (get_dummies names it feature_value)."""
    import pandas as pd

    kept = set(frame.columns) & set(columns)
    onehot = {}
    for feature in frame.columns:
        if feature not in kept:
            for value in pd.get_dummies(frame[feature]).columns:
                onehot[f"{feature}_{value}"] = [feature, str(value)]
    return [[c, None] if c in kept else onehot[c] for c in columns]


def class_targets(column, target: str, file: Path):
    import pandas as pd

    codes, classes = pd.factorize(column, sort=True)
    return codes.astype(np.int64), [str(c) for c in classes]


def numeric_targets(column, target: str, file: Path):
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(column):
        raise NnlabError(f"dataset.task='regression' does not fit column '{target}' of {file}, which holds text; "
                         "use classification or auto.")
    return column.to_numpy(np.float32), None