"""The platform's data layouts on the grader's side: a check that DATA_PATH holds the exercise's layout before a
script runs, the test data the platform supplies for a script without load_test, and class names for figures."""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.course.labs import LAYOUT_FILES, LAYOUTS, Exercise
from nnlab.errors import DataNotFoundError, NnlabError

log = logging.getLogger(__name__)


def check(exercise: Exercise, path: Path) -> None:
    """One sentence when DATA_PATH is not laid out as the exercise's scripts read it."""
    fix = (f"{exercise.name} reads {LAYOUTS[exercise.layout]}; write nnlab's copy there with "
           f"`nnlab course prepare {exercise.dataset} {path}`.")
    if not path.is_dir():
        raise DataNotFoundError(f"DATA_PATH {path} is not a folder: {fix}")
    missing = [name for name in LAYOUT_FILES[exercise.layout] if not (path / name).exists()]
    if missing:
        raise DataNotFoundError(f"{path} has no {', '.join(missing)}: {fix}")
    if exercise.layout == "folders" and not any(p.is_dir() for p in path.iterdir()):
        raise DataNotFoundError(f"{path} has no class folders: {fix}")


def platform_test(exercise: Exercise, path: Path, train_data: Any, x0: np.ndarray, y0: np.ndarray):
    """The test data for a script without load_test, shaped like its training data (the platform's own)."""
    if exercise.layout == "npy":
        return npy_test(path, x0, y0)
    if exercise.layout == "folders":
        return folder_test(path, train_data)
    raise NnlabError(f"{exercise.name} scripts define load_test(path); add it.")


def npy_test(path: Path, x0: np.ndarray, y0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """test_features.npy / test_target.npy, reshaped, scaled and encoded as the first training batch is."""
    missing = [n for n in ("test_features.npy", "test_target.npy") if not (path / n).is_file()]
    if missing:
        raise DataNotFoundError(f"{path} has no {', '.join(missing)}, the test set of a script without "
                                f"load_test; add the files (`nnlab course prepare fashion_mnist {path}`).")
    x, y = np.load(path / "test_features.npy"), np.load(path / "test_target.npy")
    if x[0].size != x0[0].size:
        raise NnlabError(f"The training features have shape {x0.shape[1:]} but test_features.npy holds "
                         f"{x.shape[1:]}; define load_test(path) to prepare the test set like the training set.")
    x = x.reshape((len(x), *x0.shape[1:]))
    if np.issubdtype(x0.dtype, np.floating):  # the script scaled its pixels: scale these the same way
        x = x.astype(x0.dtype) / (255.0 if float(np.max(x0)) <= 1.0 else 1.0)
    if y0.ndim == 2 and y0.shape[1] > 1:  # one-hot targets
        y = np.eye(y0.shape[1], dtype=y0.dtype)[y.astype(np.int64)]
    return x, y


def folder_test(path: Path, train_data: Any):
    """The training flow's settings without its augmentation: its `validation` subset where it split one off,
    else (said in a warning) the whole folder, which the script also trained on."""
    generator = getattr(train_data, "image_data_generator", None)
    if generator is None or not hasattr(train_data, "target_size"):
        raise NnlabError("The script has no load_test(path), and its load_train does not return an "
                         "ImageDataGenerator flow_from_directory whose settings the test photos could be read with; "
                         "define load_test(path).")
    split = float(getattr(generator, "_validation_split", 0.0) or 0.0)
    if not split:
        log.warning("no load_test and no validation_split: the test score is measured on the training photos")
    plain = type(generator)(rescale=generator.rescale, preprocessing_function=generator.preprocessing_function,
                            validation_split=split)
    return plain.flow_from_directory(str(path), target_size=train_data.target_size, color_mode=train_data.color_mode,
                                     class_mode=train_data.class_mode, batch_size=train_data.batch_size,
                                     shuffle=False, subset="validation" if split else None)


def class_names(exercise: Exercise, path: Path, test_data: Any, count: int) -> list[str]:
    """Names for the confusion matrix: the flow's class_indices, the class folders, Fashion-MNIST's, else 0..k."""
    indices = getattr(test_data, "class_indices", None)
    if isinstance(indices, dict) and len(indices) == count:
        return sorted(indices, key=indices.get)
    if exercise.layout == "folders":
        folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) == count:
            return folders
    if exercise.dataset == "fashion_mnist" and count == 10:
        from nnlab.data.idx import FASHION_CLASSES

        return list(FASHION_CLASSES)
    return [str(k) for k in range(count)]
