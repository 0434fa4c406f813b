"""Model builders: each registered builder turns an input tensor into features; `build_model` adds the head.

Builders take their config's keys as keyword arguments, so `conf/model/<name>.yaml` is the builder's
signature written down.
"""

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from nnlab.config import builder_kwargs
from nnlab.errors import NnlabError
from nnlab.layers import MemberAverage, float32_policy, members, serving_model  # noqa: F401  (re-exported)
from nnlab.registry import Registry
from nnlab.tasks import Task, get_task

MODELS = Registry("model")


def build_model(cfg: Any, input_shape: tuple[int, ...], task: "str | Task", num_classes: int,
                augment: Sequence[keras.layers.Layer] = (), name: str | None = None) -> keras.Model:
    """Input -> training-only augmentation layers -> the registered body -> the task's head.

    `cfg` is the model's typed config (or a mapping, completed from its schema's defaults).

    `param_budget` (solved through the builder's `width`) and `max_params` are checked here, before any
    training starts.
    """
    kwargs = solve_param_budget(cfg, input_shape, task, num_classes)
    max_params = kwargs.pop("max_params", None)
    model = assemble(kwargs, input_shape, task, num_classes, augment, name)
    if max_params and model.count_params() > max_params:
        raise NnlabError(f"Model '{model.name}' has {model.count_params():,} parameters, over model.max_params="
                         f"{int(max_params):,}; choose a smaller model (width, backbone, dense layers) or raise "
                         "the limit.")
    return model


def assemble(kwargs: Mapping[str, Any], input_shape, task, num_classes, augment=(), name=None) -> keras.Model:
    kwargs = dict(kwargs)
    task = get_task(task)
    builder = kwargs.pop("name")
    check_inputs(builder, tuple(input_shape))
    count = kwargs.pop("ensemble", None)
    count = 1 if count is None else int(count)
    if count < 1:
        raise NnlabError(f"model.ensemble={count}: an ensemble needs 1 or more members (1 = a single model).")
    body = MODELS.get(builder)
    made_for = MODELS.info(builder).get("task")
    if made_for and made_for != task.name:
        raise NnlabError(f"model '{builder}' is made for {made_for} and this dataset's task is {task.name}; choose "
                         "another model, or a dataset for that task.")
    if MODELS.info(builder).get("complete"):
        # A whole model with its own head (a detector). It takes raw pixels, in training and prediction alike:
        # no rescaling layer in front; its task refuses augmentation that would not move its targets.
        if count != 1:
            raise NnlabError(f"model '{builder}' is a whole model with its own head: set model.ensemble=1.")
        return body(input_shape=tuple(input_shape), num_classes=num_classes, **kwargs)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for layer in augment:
        x = layer(x)
    if count == 1:
        outputs = task.head(body(x, **kwargs), num_classes)
    else:
        outputs = ensemble(x, count, functools.partial(body, **kwargs), task, num_classes)
    return keras.Model(inputs, outputs, name=name or builder)


INPUT_RANKS = {"images": (3, "images (height, width, channels)"), "sequences": (2, "sequences (steps, features)")}


def check_inputs(builder: str, input_shape: tuple[int, ...]) -> None:
    """A model registered for images or sequences refuses other data in one sentence, before Keras says ndim."""
    needs = MODELS.info(builder).get("inputs")
    if needs in INPUT_RANKS and len(input_shape) != INPUT_RANKS[needs][0]:
        given = f"rows of {input_shape[0]} values" if len(input_shape) == 1 else f"arrays of shape {input_shape}"
        raise NnlabError(f"model '{builder}' needs {INPUT_RANKS[needs][1]}, but the dataset gives {given}; choose a "
                         f"model for this data (e.g. model=mlp) or a dataset of {needs}.")


def ensemble(x, count: int, body, task: Task, num_classes: int):
    """`count` copies of body + head, each its own sub-model with its own initial weights (and dropout masks),
    trained side by side on the same batches: the loss is the mean of the members' losses, the prediction the
    mean of their outputs (see MemberAverage)."""
    if task.head_units(num_classes) != 1:
        raise NnlabError(f"model.ensemble={count} works for heads of one output unit (regression, two classes); "
                         f"this {task.name} head has {task.head_units(num_classes)}: set model.ensemble=1.")
    outputs = []
    for i in range(1, count + 1):
        inputs = keras.Input(shape=x.shape[1:], name=f"member{i}_inputs")
        member = keras.Model(inputs, task.head(body(inputs), num_classes), name=f"member{i}")
        outputs.append(member(x))
    return MemberAverage(name="ensemble")(outputs)


def solve_param_budget(cfg: Mapping[str, Any], input_shape, task: "str | Task", num_classes: int) -> dict[str, Any]:
    """The config with `width` chosen so the model's parameter count is closest to `param_budget` (the
    "same size, different depth" lab); unchanged without a budget. Raises if the best is off by over 5%."""
    kwargs = builder_kwargs("model", cfg)
    budget = kwargs.pop("param_budget", None)
    if not budget:
        return kwargs
    param = inspect.signature(MODELS.get(kwargs["name"])).parameters.get("width")
    if param is None or kwargs.get("widths"):
        raise NnlabError(f"model.param_budget needs a model sized by `width` (mlp with depth/width, alexnet, "
                         f"resnet, unet); '{kwargs['name']}' {'has explicit widths' if param else 'has none'}: "
                         "drop the budget or set depth and width instead.")
    lightweight = {k: v for k, v in kwargs.items() if k != "max_params"}

    @functools.cache  # the bisection and the final check ask for the same widths again
    def count(width):
        return assemble(lightweight | {"width": width}, input_shape, task, num_classes).count_params()

    width = closest_width(count, budget, integer=param.annotation is int)
    params = count(width)
    if abs(params - budget) > 0.05 * budget:
        raise NnlabError(f"model.param_budget={int(budget):,} cannot be met within 5% by '{kwargs['name']}' "
                         f"(closest: width {width}, {params:,} parameters); change the budget or the depth.")
    return kwargs | {"width": width}


def closest_width(count, budget: float, integer: bool):
    """Bisection on a parameter count that grows with the width."""
    lo, hi = (1, 2) if integer else (1 / 64, 1.0)
    while count(hi) < budget and hi < 2**20:
        lo, hi = hi, hi * 2
    for _ in range(40 if integer else 24):
        if (hi - lo <= 1) if integer else (hi / lo < 1.001):
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - budget))


def regularizer(l1: float = 0.0, l2: float = 0.0):
    if l1 or l2:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    return None


def dense_block(x, units: int, *, activation: str, batch_norm: bool, dropout: float, reg=None, name: str):
    # Dense -> BN -> activation: with BN the bias is redundant (BN's beta plays its part).
    x = keras.layers.Dense(units, use_bias=not batch_norm, kernel_regularizer=reg, name=f"{name}_dense")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


# Registration: each module's builders register themselves on import.
from nnlab.models import alexnet, conv, dense, resnet, retinanet, sequence, transfer, unet  # noqa: E402,F401
