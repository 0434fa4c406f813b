"""Precise batch norm: moving statistics recomputed over training data for the trained weights, and a warning
when a model scores far worse at inference than it did while training.

Keras's BatchNormalization normalises a training batch by its own statistics, but validation, test and the saved
model by moving averages (momentum 0.99) that start at mean 0, variance 1. After `t` updates the start still
weighs momentum**t: 120 images in batches of 64 for 8 epochs make 16 updates, 85% of the start, and the U-Net
that reached a training mean IoU of 0.83 scores 0.06 on the test set. "Precise BN" (pycls; fvcore's
update_bn_stats) replaces the moving averages by the plain mean and variance of each layer's inputs over a sample
of training data, with the trained weights.

Only the batch-norm layers run in training mode while the statistics are gathered: dropout, noise and the
model's augmentation layers stay in inference mode, so each layer sees the inputs it will see at inference
(dropout's rescaling shifts the variance a training-mode pass would measure). Frozen batch-norm layers
(`trainable = False`: Keras runs them in inference mode) are left as they are, nested models included.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

from nnlab.tasks import get_task, higher_is_better

log = logging.getLogger(__name__)

# Moving statistics count as settled once their initial values weigh less than this (momentum ** updates): the
# moving variance is then off by momentum**t * |1 - v| / v, under 10% for a true variance v down to 0.01. At
# Keras's momentum 0.99 that is 688 updates.
SETTLED = 1e-3
# Training examples the statistics are computed over (pycls: 8192 ImageNet images, on GPUs). A conv layer averages
# each channel over every pixel of them, a dense one over the examples: its mean is then within ~4% of a standard
# deviation, its variance within ~6%. On a 2-core CPU a pass over 512 64x64 scenes costs a U-Net about as much as
# 5 training batches of 32. Also the sample the inference-gap check scores.
IMAGES = 512
# The warning's "far below": an inference score closer to chance than to the training score.
GAP = 0.5


def trainable_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The batch-norm layers that update their statistics in training (nested models and layers included).
    Batch renormalisation layers keep their own moving statistics and are left alone."""
    layers = model._flatten_layers(include_self=False, recursive=True)  # Keras's own walk through nested layers
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable and not getattr(layer, "renorm", False)]


def unsettled(norms: Sequence[keras.layers.BatchNormalization], updates: int) -> bool:
    """Whether some layer's moving statistics still weigh their initial values by more than SETTLED."""
    return any(float(layer.momentum) ** updates > SETTLED for layer in norms)


def sample(n: int, seed: int, size: int = IMAGES) -> np.ndarray:
    """Sorted indices of a seeded sample of `size` of n examples (all of them when n <= size): sorted so that
    a memory-mapped array is read front to back."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def recompute(model: keras.Model, batches: Iterable[np.ndarray],
              norms: Sequence[keras.layers.BatchNormalization] | None = None, step: Callable | None = None) -> int:
    """Set the moving mean and variance of every trainable batch-norm layer to the mean and variance of its
    inputs over `batches` (model inputs), each layer normalising by the batch's statistics as in training;
    returns the number of examples seen. Nothing is written before every batch has been measured. `step`:
    batch_moments(model, norms), kept by a caller that recomputes often (TensorFlow traces it once)."""
    norms = trainable_norms(model) if norms is None else list(norms)
    if not norms:
        return 0
    step = step or batch_moments(model, norms)
    stats: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in norms]
    seen = 0
    for batch in batches:
        for entries, moments in zip(stats, step(batch)):
            if moments is not None:
                entries.append((len(batch), *moments))
        seen += len(batch)
    for layer, entries in zip(norms, stats):
        pooled = pool(entries)
        if pooled is not None:  # else a layer the forward pass did not reach: left as it is
            layer.moving_mean.assign(pooled[0].astype(np.float32))
            layer.moving_variance.assign(pooled[1].astype(np.float32))
    return seen


def batch_moments(model: keras.Model, norms: Sequence[keras.layers.BatchNormalization]) -> Callable:
    """batch -> for each layer of `norms`, (mean, variance) of its inputs in that batch, or None where the
    forward pass did not reach it. On TensorFlow a traced function: eager calls took 2.2x a compiled pass of a
    U-Net; it reads the weights as they are at each call."""
    order: list[int] = []  # the layer of each returned pair, fixed when the function is traced

    def forward(batch):
        found: dict[int, tuple] = {}
        with measuring(norms, found):
            model(batch, training=False)
        order[:] = sorted(found)
        return [tensor for i in order for tensor in found[i]]

    traced: list[Callable] = []

    def step(batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
        run = forward
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if not traced:  # any batch size: a sample's last, smaller batch needs no second trace
                spec = tf.TensorSpec((None, *batch.shape[1:]), tf.as_dtype(batch.dtype))
                traced.append(tf.function(forward, input_signature=[spec]))
            run = traced[0]
        flat = [keras.ops.convert_to_numpy(t).astype(np.float64) for t in run(batch)]
        moments: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(norms)
        for k, i in enumerate(order):
            moments[i] = (flat[2 * k], flat[2 * k + 1])
        return moments

    return step


@contextlib.contextmanager
def measuring(norms: Sequence[keras.layers.BatchNormalization], found: dict[int, tuple]):
    """While inside, each layer of `norms` normalises by its batch's own statistics, as in training, whatever
    the model's `training` flag, and records them in found[index]; nothing is written to its variables."""
    try:
        for index, layer in enumerate(norms):
            object.__setattr__(layer, "call", measured(layer, index, found))  # shadows the class's call
        yield
    finally:
        for layer in norms:
            layer.__dict__.pop("call", None)


def measured(layer: keras.layers.BatchNormalization, index: int, found: dict[int, tuple]) -> Callable:
    """BatchNormalization's training-mode call (float32 maths, as Keras does it), recording the moments. A mask
    is ignored (no nnlab model feeds batch norm one); a layer called twice in a pass records its last call."""

    def call(inputs, training=None, mask=None):
        x = keras.ops.cast(inputs, "float32")
        axis = layer.axis % len(x.shape)
        mean, variance = keras.ops.moments(x, axes=[a for a in range(len(x.shape)) if a != axis])
        found[index] = (mean, variance)
        out = keras.ops.batch_normalization(x, mean, variance, axis=axis, epsilon=layer.epsilon,
                                            offset=layer.beta if layer.center else None,
                                            scale=layer.gamma if layer.scale else None)
        return keras.ops.cast(out, layer.compute_dtype)

    return call


def pool(batches: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and variance of all the batches' values together, from each batch's size, mean and variance
    (within-batch variance plus the spread of the batch means: no E[x²] - E[x]² cancellation)."""
    if not batches:
        return None
    n = np.array([b[0] for b in batches], np.float64)
    means, variances = np.stack([b[1] for b in batches]), np.stack([b[2] for b in batches])
    shape = (-1,) + (1,) * (means.ndim - 1)
    weights = n.reshape(shape) / n.sum()
    mean = (weights * means).sum(axis=0)
    return mean, (weights * (variances + (means - mean) ** 2)).sum(axis=0)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes the moving statistics at the end of an epoch's training, before its validation (or at the
    epoch's end without one), while they are unsettled (`always`: at every epoch), and after the optimizer's
    weight average (use_ema) replaces the weights at the end of a fit. So every epoch's validation, early
    stopping's best weights, the per-epoch checkpoint and the final model hold statistics that fit their
    weights. It runs between batches, in the time TimeBudget reserves for an epoch's end, never in a batch's.

    One instance spans the stages of a schedule: `start_stage(updates)` begins a stage's count of updates
    (those it trained before a resume); a stage may have unfrozen batch-norm layers, so counts restart."""

    def __init__(self, x: Any, batch_size: int, *, always: bool = False, seed: int = 0, times: int = 0):
        super().__init__()
        self.x, self.batch_size, self.always = x, int(batch_size), always
        self.indices = sample(len(x), seed)
        self.times = times  # recomputations so far (a resumed run's included)
        self.updates = 0  # training steps of this stage
        self.checked = True  # nothing trained since the last check
        self.norms: list[keras.layers.BatchNormalization] = []
        self.step: Callable | None = None  # batch_moments of this fit's norms

    @property
    def images(self) -> int:
        return len(self.indices)

    def start_stage(self, updates: int = 0) -> None:
        self.updates, self.checked = updates, True

    def on_train_begin(self, logs=None):
        self.norms = trainable_norms(self.model)  # trainable flags change between stages
        self.step = batch_moments(self.model, self.norms) if self.norms else None

    def on_train_batch_end(self, batch, logs=None):
        self.updates += 1
        self.checked = False

    def on_test_begin(self, logs=None):
        self.settle()

    def on_epoch_end(self, epoch, logs=None):
        self.settle()  # an epoch without validation; after one, already checked

    def on_train_end(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if getattr(optimizer, "use_ema", False):  # the weights were just replaced by their moving average
            self.checked = False
            self.settle()

    def settle(self) -> None:
        if self.checked or not self.norms:
            return
        self.checked = True
        if not (self.always or unsettled(self.norms, self.updates)):
            return
        start = time.perf_counter()
        recompute(self.model, self.batches(), self.norms, self.step)
        self.times += 1
        log.info("batch norm: moving statistics of %d layers recomputed over %d training examples in %.1f s (after "
                 "%d updates of this stage)", len(self.norms), self.images, time.perf_counter() - start, self.updates)

    def batches(self):
        for start in range(0, len(self.indices), self.batch_size):
            yield np.asarray(self.x[self.indices[start:start + self.batch_size]])


def tag(setting: Any, times: int, images: int, model: keras.Model) -> str:
    """The run's `precise_bn` tag: what was done to the moving statistics."""
    if setting is False:
        return "off"
    if not trainable_norms(model) and not times:
        return "no trainable batch norm"
    if not times:
        return "not needed: settled"
    return f"recomputed {times}x over {images} training examples"


def gap_message(metric: str, train: float, inference: float, chance: float, val: float | None = None,
                precise_off: bool = False) -> str | None:
    """A one-line warning when the score at inference on training data (and on the validation split, if any)
    is closer to chance than to the training-mode score of the same weights; None otherwise. The same training
    data in both modes: overfitting cannot cause the gap, only layers that behave differently at inference.
    `chance` is the score of the same predictions against shuffled targets."""
    scores = [train, inference, chance, *([val] if val is not None else [])]
    if not all(np.isfinite(v) for v in scores):
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    learnt = sign * (train - chance)  # how far training got beyond chance
    if learnt <= 0 or any(sign * (v - chance) >= GAP * learnt for v in scores[1:2] + scores[3:]):
        return None
    where = f"{inference:.3g} on training examples at inference"
    if val is not None:
        where += f" and {val:.3g} on validation"
    cause = ("batch-norm moving statistics that do not fit the weights? trainer.precise_bn=false: set it to auto"
             if precise_off else "a layer that behaves differently at inference, such as batch norm or noise?")
    return (f"The model's {metric} is {where}, closer to chance ({chance:.3g}) than to the {train:.3g} it reached "
            f"while training, same weights: {cause}")


def inference_gap(model: keras.Model, data, history: dict[str, list[float]], epoch: int, batch_size: int,
                  targets: Callable[[np.ndarray], Any], seed: int = 0, precise_off: bool = False) -> str | None:
    """gap_message for the task's headline metric at 1-based `epoch` (the one whose weights the model holds),
    scoring a sample of the training data at inference, against its targets and against them shuffled;
    logged as a warning. None where the training history has no such metric (detection scores mAP on
    validation only)."""
    from nnlab.data.pipeline import batches

    metric = get_task(data.task).headline.removeprefix("test_")
    trained, validated = history.get(metric) or [], history.get(f"val_{metric}") or []
    if not 0 < epoch <= len(trained):
        return None
    x, y = data.train
    rows = sample(len(x), seed)
    x_rows, y_rows = np.asarray(x[rows]), np.asarray(y)[rows]
    shuffled = y_rows[np.random.default_rng(seed).permutation(len(rows))]
    inference, chance = (model.evaluate(batches(x_rows, targets(t), batch_size, shuffle=False), verbose=0,
                                        return_dict=True).get(metric) for t in (y_rows, shuffled))
    if inference is None or chance is None:
        return None
    val = validated[epoch - 1] if len(validated) >= epoch else None
    message = gap_message(metric, trained[epoch - 1], float(inference), float(chance), val, precise_off)
    if message:
        log.warning(message)
    return message
