"""The course's five exercises in one table: what each is graded on (metric, direction, bar), its time limit, the
kind of job (an nnlab task) and the platform's data layout. `nnlab course run`, `init` and `prepare` read it."""

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from nnlab.errors import ConfigError, unknown_name

# The platform's data layouts, as students' scripts read them under PATH (passed with a trailing slash).
LAYOUTS = {
    "npy": "PATH/train_features.npy (uint8, n x 28 x 28), PATH/train_target.npy, PATH/test_features.npy, "
           "PATH/test_target.npy",
    "folders": "PATH/<class>/<photos>, one folder per class",
    "faces": "PATH/labels.csv (file_name, real_age) and PATH/final_files/<photos>",
}
# Files or folders that must exist under PATH for each layout (a quick check before a script runs).
LAYOUT_FILES = {"npy": ("train_features.npy", "train_target.npy"), "folders": (),
                "faces": ("labels.csv", "final_files")}


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    task: str  # nnlab task: its figures (confusion matrix, predicted vs true) and extra test metrics
    metric: str  # "accuracy" or "mae": what the platform scores on the test data
    bar: float
    higher_is_better: bool
    minutes: float | None  # the platform's time limit for the whole script; None: none stated
    layout: str  # a LAYOUTS key
    dataset: str  # the nnlab dataset `nnlab course prepare` writes for it

    def passes(self, score: float) -> bool:
        return score >= self.bar if self.higher_is_better else score <= self.bar

    def show(self, value: float) -> str:
        """A score as the course states bars: accuracy in percent, MAE in the target's units (years)."""
        return f"{100 * value:.2f}%" if self.metric == "accuracy" else f"{value:.2f}"

    def metric_name(self) -> str:
        return "MAE" if self.metric == "mae" else self.metric

    def bar_text(self) -> str:
        bar = f"{100 * self.bar:g}%" if self.metric == "accuracy" else f"{self.bar:g}"
        return f"{self.metric_name()} {'>=' if self.higher_is_better else '<='} {bar}"


EXERCISES = {e.name: e for e in (
    Exercise("exer_1", "Fashion-MNIST, fully connected", "classification", "accuracy", 0.85, True, None, "npy",
             "fashion_mnist"),
    Exercise("exer_2", "Fashion-MNIST, CNN with Adam", "classification", "accuracy", 0.87, True, None, "npy",
             "fashion_mnist"),
    Exercise("exer_3", "fruits, CNN", "classification", "accuracy", 0.90, True, 60, "folders", "fruits"),
    Exercise("exer_4", "fruits, ResNet", "classification", "accuracy", 0.99, True, 30, "folders", "fruits"),
    Exercise("exer_5", "faces, age (regression)", "regression", "mae", 8.0, False, None, "faces", "faces"),
)}


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ConfigError(unknown_name("exercise", name, EXERCISES))
    return EXERCISES[name]


def exercise_of(script: Path, lab: str | None) -> Exercise:
    """--lab, else the exer_N in the script's file name."""
    if lab:
        return get_exercise(lab)
    found = re.search(r"exer_?(\d)", script.stem)
    if found and f"exer_{found.group(1)}" in EXERCISES:
        return EXERCISES[f"exer_{found.group(1)}"]
    raise ConfigError(f"Cannot tell which exercise {script.name} is for; name it with --lab ("
                      f"{', '.join(EXERCISES)}) or put exer_N in the file name.")


def script_path(name: str) -> Path:
    """nnlab's own script for exercise `name`, shipped in the package."""
    get_exercise(name)
    return Path(str(resources.files("nnlab.course.exercises") / f"{name}.py"))
