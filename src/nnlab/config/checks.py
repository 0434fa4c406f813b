"""Value checks of the typed configs: ranges, names and sizes, run by each dataclass's `__post_init__`.

`app.run` builds the dataclasses with `OmegaConf.to_object`, so these run before any MLflow run exists and
before Keras is imported; a Python caller constructing a config gets the same checks. A bad value raises
`ConfigError` with one sentence: the full key and value, what is allowed, and for names the valid choices
and the closest match. A dataclass does not know where it sits in the config, so its `__post_init__` passes
its key prefix (`validate(self, "trainer", TRAINER)`); nested configs (stages, conv blocks, early stopping,
the schedule) are checked by their parent, which knows their full key (`trainer.stages.0.epochs`).
Values still MISSING (`???`, to be set on the command line) are left to `app.run`, which names them.

The augment group's checks (albumentations' own transform names and arguments) are in `augment_checks`.
The name lists mirror what the builders accept at runtime; tests/test_bad_input.py checks each against its
builder module (or Keras), so they cannot drift apart. The builders keep their own checks (defence in depth).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nnlab.errors import ConfigError, unknown_name

Rule = Callable[[str, Any], None]
FIX = "fix it in the YAML file or the override"

# Keras activation names (keras.activations.get accepts each; `threshold` is left out: it needs arguments).
ACTIVATIONS = ("celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
               "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu",
               "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus",
               "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink")
# Metric names people give in trainer.metrics beside the tasks' own defaults (each accepted by some task's
# `metric()`: Keras's names, plus rmse).
KERAS_METRICS = ("accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
                 "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "auc", "precision", "recall",
                 "mae", "mse", "rmse", "mape", "msle", "mean_absolute_error", "mean_squared_error",
                 "root_mean_squared_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
                 "log_cosh_error", "r2_score", "cosine_similarity", "poisson", "binary_crossentropy",
                 "categorical_crossentropy", "sparse_categorical_crossentropy", "hinge", "squared_hinge",
                 "categorical_hinge", "kl_divergence")
SCHEDULES = ("constant", "cosine", "linear", "onecycle", "exponential", "plateau")  # nnlab.training.optim.SCHEDULES
CONV_POOLS = ("max", "avg", "none")  # nnlab.models.conv.POOLS + none
POOLINGS = ("avg", "max", "flatten")  # nnlab.models.transfer.POOLINGS
CELLS = ("lstm", "gru")  # nnlab.models.sequence.CELLS
BLOCKS = ("basic", "bottleneck")  # nnlab.models.resnet.BLOCKS
UPSAMPLINGS = ("transpose", "bilinear")  # nnlab.models.unet.UPSAMPLINGS
PREPROCESS = ("auto", "none", "raw", "tf", "torch", "caffe")  # nnlab.models.transfer.preprocessing
COLOR_MODES = ("rgb", "grayscale")  # nnlab.data.images.COLOR_MODES
TABLE_TASKS = ("auto", "classification", "regression")  # nnlab.data.tables (csv_table)
SCALES = ("minmax", "standard", "none")  # nnlab.data.tables (airline)
SCENE_SOURCES = ("digits", "fashion_mnist")  # nnlab.data.scenes
SCENE_TARGETS = ("masks", "boxes")


def is_missing(value: Any) -> bool:
    return isinstance(value, str) and value == "???"


def items(cfg: Any) -> list[tuple[str, Any]]:
    """(field, value) pairs of a dataclass, or of a mapping (a stage given as a dict from Python)."""
    if isinstance(cfg, Mapping):
        return list(cfg.items())
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]


def validate(cfg: Any, prefix: str, rules: Mapping[str, Rule]) -> None:
    """Run the rule of every field of `cfg` that has one; its key is `prefix.field`."""
    for name, value in items(cfg):
        rule = rules.get(name)
        if rule is not None and not is_missing(value):
            rule(f"{prefix}.{name}", value)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, null: bool = False, note: str = "") -> Rule:
    """A number within bounds (an open bound excludes its value); `null` also allows None."""
    if low is not None and high is not None:
        bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bound = f"{'>' if low_open else '>='} {low:g}"
    else:
        bound = f"{'<' if high_open else '<='} {high:g}"
    allowed = f"{bound}{' or null' if null else ''}{f' ({note})' if note else ''}"

    def rule(key: str, value: Any) -> None:
        if value is None and null:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} is not a number: it must be {allowed}; {FIX}.")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:  # NaN fails every comparison
            raise ConfigError(f"{key}={value} is out of range: it must be {allowed}; {FIX}.")

    return rule


def fraction(note: str = "the share of units dropped") -> Rule:
    return number(0, 1, high_open=True, note=note)


def one_of(options: Sequence[str] | Callable[[], Sequence[str]], *, null: bool = False) -> Rule:
    """A name among `options` (or a function giving them, for lists known only once plugins are imported)."""

    def rule(key: str, value: Any) -> None:
        if value is None and null:
            return
        valid = options() if callable(options) else options
        if value not in valid:
            parent, _, last = key.rpartition(".")
            kind = f"{parent} entry" if last.isdigit() else key  # a list's entry: trainer.metrics entry 'x'
            raise ConfigError(unknown_name(kind, value, valid))

    return rule


def each(rule: Rule, *, at_least: int = 0, null: bool = False) -> Rule:
    """A list whose entries all pass `rule` (their keys: key.0, key.1, …), with at least `at_least` of them."""

    def check(key: str, value: Any) -> None:
        if value is None and null:
            return
        if isinstance(value, str | Mapping) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}={value!r} is not a list; {FIX}.")
        if len(value) < at_least:
            raise ConfigError(f"{key}={list(value)} must list at least {at_least} "
                              f"entr{'y' if at_least == 1 else 'ies'}; {FIX}.")
        for i, entry in enumerate(value):
            if not is_missing(entry):
                rule(f"{key}.{i}", entry)

    return check


def pair(low: int = 1, *, ordered: bool = False, null: bool = False, what: str = "[height, width]") -> Rule:
    """Two integers >= low (image sizes; [min, max] ranges with `ordered`)."""

    def check(key: str, value: Any) -> None:
        if value is None and null:
            return
        ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value)
              and (not ordered or value[0] <= value[1]))
        if not ok:
            shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
            order = " with min <= max" if ordered else ""
            raise ConfigError(f"{key}={shown} must be {what}: two integers >= {low}{order}"
                              f"{' or null' if null else ''}; {FIX}.")

    return check


def nested(rules: Mapping[str, Rule]) -> Rule:
    """A nested config (dataclass or mapping) whose fields follow `rules`."""
    return lambda key, value: validate(value, key, rules) if value is not None else None


def trainable(key: str, value: Any) -> None:
    """all | none | N top layers (N >= 0) | a list of layer-name prefixes | null | true/false."""
    if value is None or isinstance(value, bool) or value in ("all", "none"):
        return
    if isinstance(value, int) and value >= 0:
        return
    if isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, str) for v in value):
        return
    raise ConfigError(f"{key}={value!r} is not a trainable spec: use all, none, a number of top layers (>= 0) "
                      f"or a list of layer-name prefixes; {FIX}.")


def auto_or_bool(key: str, value: Any) -> None:
    """auto | true | false."""
    if value != "auto" and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be auto, true or false; {FIX}.")


# Names that only the packages above know (every registered task's losses and metrics, plugins' included): the
# owner provides them when it is imported (nnlab.tasks does), so that config, at the bottom, never imports it.
PROVIDED: dict[str, Callable[[], Sequence[str]]] = {}


def provide(kind: str, names: Callable[[], Sequence[str]]) -> None:
    PROVIDED[kind] = names


def provided(kind: str, *, null: bool = False) -> Rule:
    """A name among those provided for `kind`. Every nnlab command imports the tasks before it builds a typed
    config; a Python caller that has not is left to the task, which checks the name again when it compiles."""

    def rule(key: str, value: Any) -> None:
        if kind in PROVIDED:
            one_of(PROVIDED[kind], null=null)(key, value)

    return rule


def fold(key: str, cfg: Any) -> None:
    """Boston's k-fold: `fold` counts from 0 to folds - 1."""
    if cfg.folds is not None and not is_missing(cfg.folds) and not 0 <= cfg.fold < cfg.folds:
        raise ConfigError(f"{key}.fold={cfg.fold} is out of range for {key}.folds={cfg.folds}: it must be in "
                          f"[0, {cfg.folds - 1}]; {FIX}.")


def interval(key: str, value: Any) -> None:
    """[low, high]: two numbers, low < high."""
    if not (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value) and value[0] < value[1]):
        raise ConfigError(f"{key}={value} must be [low, high]: two numbers with low < high; {FIX}.")


POSITIVE = number(1)
POSITIVE_OR_NULL = number(1, null=True)
NON_NEGATIVE = number(0)
UNIT_INTERVAL = number(0, 1, high_open=True)
ACTIVATION = one_of(ACTIVATIONS)
UNITS = each(POSITIVE)

MODEL: dict[str, Rule] = {
    "param_budget": POSITIVE_OR_NULL, "max_params": POSITIVE_OR_NULL, "ensemble": POSITIVE,
    "widths": each(POSITIVE, null=True), "units": each(POSITIVE, at_least=1), "dense": UNITS,
    "activation": ACTIVATION, "dropout": fraction(), "recurrent_dropout": fraction(), "l1": NON_NEGATIVE,
    "l2": NON_NEGATIVE, "width": number(0, low_open=True), "depth": POSITIVE, "convs": POSITIVE,
    "stem_stride": POSITIVE, "stem_filters": POSITIVE, "stem_kernel": POSITIVE,
    "kernels": each(POSITIVE, at_least=1), "pool_after": UNITS, "stages": each(POSITIVE, at_least=1),
    "block": one_of(BLOCKS), "cell": one_of(CELLS), "pooling": one_of(POOLINGS), "upsampling": one_of(UPSAMPLINGS),
    "preprocess": one_of(PREPROCESS), "trainable": trainable, "resize": pair(null=True),
    "blocks": each(nested({"filters": POSITIVE, "kernel": POSITIVE, "convs": POSITIVE, "pool": one_of(CONV_POOLS),
                           "dropout": fraction()}), at_least=1),
}
MLP = MODEL | {"depth": NON_NEGATIVE}  # depth 0 (or widths: []): no hidden layer, a linear model
FILTER_LIST = MODEL | {"filters": each(POSITIVE, at_least=1)}  # alexnet, resnet: one entry per stage
FILTER_COUNT = MODEL | {"filters": POSITIVE}  # unet: the first level's filters
RETINANET = FILTER_LIST | {"blocks": each(POSITIVE, at_least=1), "min_level": number(1), "max_level": number(1),
                           "anchor_size": number(0, low_open=True), "head_convs": NON_NEGATIVE,
                           "max_detections": POSITIVE, "min_score": number(0, 1), "iou_threshold": number(0, 1)}

SCHEDULE: dict[str, Rule] = {
    "name": one_of(SCHEDULES), "warmup_epochs": NON_NEGATIVE, "alpha": number(0, 1),
    "pct_start": number(0, 1, high_open=True), "div_factor": number(1),
    "decay_rate": number(0, low_open=True), "factor": number(0, 1, low_open=True, high_open=True),
    "patience": NON_NEGATIVE, "min_lr": NON_NEGATIVE,
}
OPTIMIZER: dict[str, Rule] = {
    "learning_rate": number(0, low_open=True), "schedule": nested(SCHEDULE),
    "clipnorm": number(0, low_open=True, null=True), "ema_momentum": number(0, 1), "momentum": UNIT_INTERVAL,
    "beta_1": UNIT_INTERVAL, "beta_2": UNIT_INTERVAL, "rho": UNIT_INTERVAL, "epsilon": number(0, low_open=True),
    "weight_decay": NON_NEGATIVE,
}

STAGE: dict[str, Rule] = {"epochs": POSITIVE, "learning_rate": number(0, low_open=True, null=True),
                          "trainable": trainable}
TRAINER: dict[str, Rule] = {
    "epochs": POSITIVE, "batch_size": POSITIVE, "max_minutes": number(0, low_open=True, null=True),
    "early_stopping": nested({"patience": number(0, null=True, note="epochs without improvement")}),
    "stages": each(nested(STAGE)), "loss": provided("trainer.loss", null=True),
    "metrics": each(provided("trainer.metrics"), null=True), "threads": POSITIVE_OR_NULL,
    "devices": POSITIVE_OR_NULL, "verbose": number(0, 2, null=True), "precise_bn": auto_or_bool,
}

DATASET: dict[str, Rule] = {
    "limit": number(2, null=True, note="the loaders keep at least 2 examples"),
    "val_split": number(0, 1, high_open=True, note="0: no validation split"),
    "test_split": number(0, 1, low_open=True, high_open=True), "max_bad_fraction": number(0, 1),
    "image_size": pair(), "color_mode": one_of(COLOR_MODES), "window": POSITIVE, "difference": NON_NEGATIVE,
    "folds": number(2, null=True), "max_image_pixels": POSITIVE,
}
CSV_TABLE = DATASET | {"task": one_of(TABLE_TASKS)}
AIRLINE = DATASET | {"scale": one_of(SCALES)}
SCENES = DATASET | {
    "source": one_of(SCENE_SOURCES), "target": one_of(SCENE_TARGETS), "count": number(3),
    "canvas_size": pair(2), "items": pair(0, ordered=True, what="[min, max]"),
    "item_size": pair(2, ordered=True, what="[min, max]"), "classes": each(number(0, 9), null=True),
    "max_overlap": number(0, 1), "noise": NON_NEGATIVE,
}
NOISY_CURVE = DATASET | {"count": number(2), "test_count": POSITIVE, "x_range": interval, "noise": NON_NEGATIVE}
