"""`nnlab course run SCRIPT DATA_PATH`: grade a course script the way the platform does, tracked in MLflow.

The platform calls `train_data = load_train(path)`, `test_data = load_test(path)`, takes `input_shape` from the
first batch, then `model = train_model(create_model(input_shape), train_data, test_data)` and scores the model on
the test data. So does the grader. While train_model runs, `keras.Model.fit` is wrapped so that every fit the script
calls also gets nnlab's per-epoch metrics callback and the time budget, whatever the script's style (`tensorflow.keras`
imports are Keras 3 there too). The test score comes from the model's predictions, not from its compiled metrics
(`'acc'`, `'accuracy'`, none), so every script is scored alike; the task logs its figures from the same predictions.
"""

import contextlib
import importlib.util
import inspect
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.config import DEFAULT_STORE, TrackingConfig
from nnlab.course import feeds, layout
from nnlab.course.labs import Exercise, exercise_of
from nnlab.errors import ConfigError, NnlabError

EXPERIMENT = "course"
SEED = 0
SIGNATURES = {"load_train": "load_train(path)", "load_test": "load_test(path)",
              "create_model": "create_model(input_shape)",
              "train_model": "train_model(model, train_data, test_data, ...)"}


@dataclass
class Grade:
    exercise: Exercise
    score: float
    script_seconds: float
    epochs: int
    stopped_by_budget: bool
    run_id: str
    uri: str

    @property
    def in_time(self) -> bool:
        return self.exercise.minutes is None or self.script_seconds <= 60 * self.exercise.minutes

    @property
    def passed(self) -> bool:
        return self.exercise.passes(self.score) and self.in_time

    def verdict(self) -> str:
        limit = f"limit {self.exercise.minutes:g} min" if self.exercise.minutes else "no time limit"
        budget = ", stopped by --max-minutes" if self.stopped_by_budget else ""
        exercise, epochs = self.exercise, f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return (f"{exercise.name} ({exercise.title}): {'PASS' if self.passed else 'FAIL'}: test "
                f"{exercise.metric_name()} {exercise.show(self.score)} (bar: {exercise.bar_text()}); "
                f"{self.script_seconds / 60:.1f} min ({limit}), {epochs}{budget}")


def load_script(script: Path):
    """Import the script from its path (its folder on sys.path, for helpers beside it); one sentence if it fails."""
    if not script.is_file():
        raise ConfigError(f"Script {script} does not exist; give the path of a .py file (or copy one out with "
                          "`nnlab course init exer_N DEST`).")
    spec = importlib.util.spec_from_file_location(f"nnlab_course_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ConfigError(f"{script.name} has a syntax error ({err.msg}) at line {err.lineno}; fix the "
                          "script.") from err
    except Exception as err:  # anything the script does at import time
        raise ConfigError(f"Importing {script.name} failed: {type(err).__name__}: {first_line(err)}"
                          f"{line_in(err, script)}; fix the script.") from err
    finally:
        sys.path.remove(str(script.parent))
    return module


def check_functions(module, script: Path, exercise: Exercise) -> None:
    needed = ["load_train", "create_model", "train_model"] + (["load_test"] if exercise.layout == "faces" else [])
    missing = [name for name in needed if not callable(getattr(module, name, None))]
    if missing:
        raise ConfigError(f"{script.name} defines no {' and no '.join(SIGNATURES[n] for n in missing)}; the platform "
                          f"calls {', '.join(SIGNATURES[n] for n in needed)}: add it.")


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


def line_in(err: BaseException, script: Path) -> str:
    """' (line N of script.py)': the deepest frame of the error inside the script, if any."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == script]
    return f" (line {frames[-1].lineno} of {script.name})" if frames else ""


def call(module, name: str, script: Path, *args, **kwargs):
    """The script's function; its error becomes one sentence naming the function (and the script's line)."""
    try:
        return getattr(module, name)(*args, **kwargs)
    except NnlabError as err:
        raise NnlabError(f"{SIGNATURES[name]} in {script.name} failed: {err}") from err
    except Exception as err:  # a student's code: any error is possible
        raise NnlabError(f"{SIGNATURES[name]} in {script.name} raised {type(err).__name__}: {first_line(err)}"
                         f"{line_in(err, script)}; fix the script (HYDRA_FULL_ERROR=1 shows the traceback).") from err


class EpochLog:
    """Every epoch of every fit the script calls, numbered on across fits: to the run, and kept for curves.png."""

    def __init__(self, run):
        self.run, self.epochs, self.history = run, 0, {}

    def __call__(self, metrics: dict, step: int) -> None:
        self.epochs += 1
        self.run.metrics(metrics, step=self.epochs)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def curves(self) -> dict[str, list[float]]:
        return {k: v for k, v in self.history.items() if len(v) == self.epochs}


def budget_watch(budget):
    """A callback after the time budget's that notes whether it cut a fit short (the budget also says stop after
    a fit's last epoch, which cuts nothing)."""
    import keras

    class BudgetWatch(keras.callbacks.Callback):
        cut = False

        def on_epoch_end(self, epoch, logs=None):
            if budget.stopped and (epoch + 1 < self.params.get("epochs", 0) or budget.share < 1):
                self.cut = True

    return BudgetWatch()


@contextlib.contextmanager
def graded_fit(callbacks: list, epochs: int | None):
    """keras.Model.fit, for the duration, with `callbacks` added to the script's own (and `epochs` imposed)."""
    import keras

    original, own = keras.Model.fit, "fit" in vars(keras.Model)
    signature = inspect.signature(original)

    def fit(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.arguments["callbacks"] = [*(bound.arguments.get("callbacks") or []), *callbacks]
        if epochs:
            bound.arguments["epochs"] = epochs
        return original(*bound.args, **bound.kwargs)

    keras.Model.fit = fit
    try:
        yield
    finally:
        if own:
            keras.Model.fit = original
        else:
            del keras.Model.fit


def run_script(module, script: Path, exercise: Exercise, path: Path, epochs: int | None, max_minutes: float | None,
               run) -> tuple[Any, Any, float, EpochLog, bool]:
    """The platform's calls, timed: (model, test data, seconds, epoch log, whether the time budget cut a fit)."""
    import keras

    from nnlab.training.callbacks import EpochMetrics, TimeBudget

    start = time.perf_counter()
    where = str(path) + os.sep  # the platform passes the folder with a trailing slash
    train_data = call(module, "load_train", script, where)
    x0, y0, train_data = feeds.peek(train_data, f"load_train(path) in {script.name}")
    if callable(getattr(module, "load_test", None)):
        test_data = call(module, "load_test", script, where)
    else:
        test_data = layout.platform_test(exercise, path, train_data, x0, y0)
    input_shape = tuple(int(d) for d in x0.shape[1:])
    run.params({"input_shape": input_shape})
    model = call(module, "create_model", script, input_shape)
    if not isinstance(model, keras.Model):
        raise NnlabError(f"create_model(input_shape) in {script.name} returned {type(model).__name__}, not a Keras "
                         "model; end it with `return model`.")
    log = EpochLog(run)
    timing = [TimeBudget(max_minutes)] if max_minutes else []
    watch = budget_watch(timing[0]) if timing else None
    accepted = inspect.signature(module.train_model).parameters
    extra = {"epochs": epochs} if epochs and ("epochs" in accepted or has_kwargs(accepted)) else {}
    with graded_fit([EpochMetrics(log), *timing, *([watch] if watch else [])], epochs):
        trained = call(module, "train_model", script, model, train_data, test_data, **extra)
    seconds = time.perf_counter() - start
    if not isinstance(trained, keras.Model):
        raise NnlabError(f"train_model(...) in {script.name} returned {type(trained).__name__}, not the trained "
                         "model; end it with `return model`.")
    return trained, test_data, seconds, log, bool(watch and watch.cut)


def has_kwargs(parameters) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def log_results(run, model, test_data, exercise: Exercise, path: Path, script: Path, log: EpochLog) -> float:
    """Score the trained model on the test data; log the score, the task's figures and tables, and the curves."""
    from nnlab import plots
    from nnlab.data import Data
    from nnlab.job.run_facts import summary
    from nnlab.tasks import get_task

    task = get_task(exercise.task)
    y, predictions = feeds.predict_all(model, test_data, f"the test data of {script.name}")
    score = feeds.score(exercise.metric, y, predictions)
    title = f"{script.name} ({exercise.name})"
    units = predictions.reshape(len(predictions), -1).shape[1]
    names = layout.class_names(exercise, path, test_data, max(units, 2)) if task.categorical else None
    target = feeds.class_indices(y) if task.categorical else np.asarray(y, np.float32).reshape(-1)
    data = Data((target[:0], target[:0]), None, (np.zeros((len(target), 0)), target), task.name, names)
    run.params({"test_size": len(target)})
    metrics = {f"test_{exercise.metric}": score, "params": model.count_params()}
    metrics |= task.evaluate(model, data, predictions, 32) | task.log_results(run, data, predictions, title)
    run.metrics(metrics)
    run.text(summary(model), "model_summary.txt")
    if log.curves():
        fig = plots.learning_curves(log.curves(), None, title)
        run.figure(fig, "curves.png")
        plots.close(fig)
    return score


def store_uri(uri: str | None) -> str:
    """--uri, else $MLFLOW_TRACKING_URI, else the tracking default (./mlflow.db): the store `nnlab report` reads."""
    from nnlab.tracking import track

    return track.resolve_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE)


def grade(script: str | Path, data_path: str | Path, lab: str | None = None, epochs: int | None = None,
          max_minutes: float | None = None, uri: str | None = None) -> Grade:
    """Check, then run the script in this process in one MLflow run (experiment 'course'); returns the grade.
    `nnlab course grade` runs each submission in a process of its own instead (`isolate.py`)."""
    from nnlab.imports import import_keras_quietly
    from nnlab.tracking import track

    script, path = Path(script).expanduser().resolve(), Path(data_path).expanduser().resolve()
    exercise = exercise_of(script, lab)
    layout.check(exercise, path)
    import_keras_quietly()
    module = load_script(script)
    check_functions(module, script, exercise)
    tracking = TrackingConfig(uri=store_uri(uri), experiment=EXPERIMENT, run_name=f"{exercise.name}: {script.name}")
    track.install_signal_handlers()
    with track.start_run(tracking, run_tags(exercise, script, path)) as run:
        run.file(script, "script")
        return score_script(module, script, exercise, path, epochs, max_minutes, run, tracking.uri)


def run_tags(exercise: Exercise, script: Path, path: Path) -> dict[str, str]:
    return {"course.lab": exercise.name, "course.script": str(script), "task": exercise.task, "dataset": str(path)}


def score_script(module, script: Path, exercise: Exercise, path: Path, epochs: int | None, max_minutes: float | None,
                 run, uri: str, threads: int | None = None) -> Grade:
    """The platform's calls on a loaded script, logged to `run` (params, epochs, figures, verdict tags and note):
    the time budget is `max_minutes`, else the exercise's limit; `threads` CPU threads for its math."""
    from nnlab.training.runtime import setup_runtime

    budget = max_minutes or exercise.minutes
    params = {"lab": exercise.name, "bar": exercise.bar_text(), "time_limit_minutes": exercise.minutes,
              "epochs": epochs, "max_minutes": budget, "data_path": str(path)}
    run.params({k: v for k, v in params.items() if v is not None})  # unset is absent, not the text "None"
    run.tags(setup_runtime(SEED, False, threads))
    model, test_data, seconds, log, cut = run_script(module, script, exercise, path, epochs, budget, run)
    score = log_results(run, model, test_data, exercise, path, script, log)
    result = Grade(exercise, score, seconds, log.epochs, cut, run.run_id, uri)
    run.metrics({"script_seconds": seconds, "epochs_run": log.epochs, "passed": float(result.passed)})
    run.tags({"course.verdict": "PASS" if result.passed else "FAIL",
              "stopped_by": "time_budget" if result.stopped_by_budget else "script"})
    run.note(result.verdict())
    return result
