"""Training: compile, fit with budget/early stopping, and the final test evaluation.

Nothing here knows about MLflow: tracking hooks in through the `callbacks` argument.
"""

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from nnlab.config.optim import OptimizerConfig
from nnlab.config.train import TrainerConfig
from nnlab.data import Data
from nnlab.data.pipeline import batches
from nnlab.layers import members
from nnlab.tasks import Task, get_task, higher_is_better
from nnlab.training.batchnorm import PreciseBatchNorm, inference_gap
from nnlab.training.callbacks import Checkpoint, Divergence, TimeBudget, restore_weights
from nnlab.training.optim import build_optimizer

log = logging.getLogger(__name__)


def compile_model(model: keras.Model, optimizer, task: "str | Task", trainer: TrainerConfig,
                  num_classes: int = 0) -> None:
    """The task's loss and metrics (or the configured ones, by the names the task accepts)."""
    task = get_task(task)
    jit = trainer.jit_compile
    model.compile(
        optimizer=optimizer,
        **task.compile_args(trainer.loss, trainer.loss_options, trainer.metrics, num_classes),
        jit_compile="auto" if jit is None else bool(jit),
    )


@dataclass
class FitResult:
    history: dict[str, list[float]]
    seconds: float
    epochs_run: int
    stopped_by: str  # "epochs" | "early_stopping" | "time_budget"
    monitor: str = "val_loss"
    stage_starts: list[int] = field(default_factory=list)  # 1-based first epoch of stages 2, 3, …
    min_delta: float = 0.0  # early stopping's: a smaller change is no improvement
    last_epoch_share: float = 1.0  # of its batches, the last epoch trained: under 1 when the budget cut it
    bn_recomputes: int = 0  # times precise batch norm recomputed the moving statistics, all stages so far
    warning: str | None = None  # the trained model scores far worse at inference (batchnorm.inference_gap)

    @property
    def best_epoch(self) -> int | None:
        """1-based, by the early-stopping monitor (the task's, e.g. val_loss, unless configured), counted as
        Keras's EarlyStopping counts it (an improvement beats the best so far by more than min_delta), so it is
        the epoch whose weights restore_best_weights brings back; never an epoch whose value is NaN."""
        sign = 1.0 if higher_is_better(self.monitor) else -1.0
        best, best_value = None, -np.inf
        for epoch, value in enumerate(self.history.get(self.monitor) or [], start=1):
            if np.isfinite(value) and (best is None or sign * value - self.min_delta > best_value):
                best, best_value = epoch, sign * value
        return best

    def then(self, later: "FitResult", new_stage: bool = True) -> "FitResult":
        """This result followed by `later`: the next stage, or the rest of the same stage after a resume."""
        keys = self.history.keys() | later.history.keys()
        history = {k: [*self.history.get(k, []), *later.history.get(k, [])] for k in keys}
        starts = [*self.stage_starts, self.epochs_run + 1] if new_stage else self.stage_starts
        return FitResult(history, self.seconds + later.seconds, self.epochs_run + later.epochs_run,
                         later.stopped_by, later.monitor, starts, later.min_delta, later.last_epoch_share,
                         max(self.bn_recomputes, later.bn_recomputes), later.warning)

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "seconds": self.seconds, "epochs_run": self.epochs_run,
                "stopped_by": self.stopped_by, "monitor": self.monitor, "stage_starts": self.stage_starts,
                "min_delta": self.min_delta, "last_epoch_share": self.last_epoch_share,
                "bn_recomputes": self.bn_recomputes}


def train(model: keras.Model, data: Data, trainer: TrainerConfig, optimizer_cfg: OptimizerConfig,
          callbacks: Sequence[Any] = (), seed: int = 0, transform=None, checkpoint_dir: str | None = None,
          resume: dict[str, Any] | None = None) -> FitResult:
    """Compile and fit, stage by stage: `trainer.stages` (epochs, trainable, learning_rate each) is the
    gradual-unfreezing schedule; without it, one stage of `trainer.epochs`. Each stage gets a fresh optimizer,
    because Keras must recompile to see changed trainable flags. `transform` augments training batches in the
    pipeline (see Task.augmentation).

    With `checkpoint_dir`, every epoch saves a checkpoint there (weights, optimizer, epoch, stage, history, the
    time budget used); `resume` (a checkpoint's state, with `weights`: its file) continues from it: finished
    stages are skipped, the interrupted one goes on with its optimizer's state (a checkpoint from a stage's last
    epoch gives the next stage its weights only), epochs count on."""
    from nnlab.config.train import StageConfig
    from nnlab.models.transfer import apply_trainable

    stages = trainer.stages or [StageConfig(epochs=trainer.epochs)]
    result = FitResult(**resume["result"]) if resume else None
    budget = None
    if trainer.max_minutes:
        budget = TimeBudget(trainer.max_minutes, **(resume["budget"] if resume else {}))
    steps = -(-len(data.train[0]) // trainer.batch_size)
    ends = np.cumsum([stage.epochs for stage in stages])
    precise = None
    if trainer.precise_bn is not False:  # one for all stages: it counts its recomputations
        precise = PreciseBatchNorm(data.train[0], trainer.batch_size, always=trainer.precise_bn is True, seed=seed,
                                   times=resume["result"].get("bn_recomputes", 0) if resume else 0)
    for i, stage in enumerate(stages):
        done = result.epochs_run if result else 0
        if done >= ends[i]:  # finished before the interruption
            continue
        if stage.trainable is not None:
            apply_trainable(model, stage.trainable)
        opt_cfg = optimizer_cfg if stage.learning_rate is None else replace(optimizer_cfg,
                                                                            learning_rate=stage.learning_rate)
        optimizer, extra = build_optimizer(opt_cfg, steps, stage.epochs, first_epoch=int(ends[i]) - stage.epochs,
                                           budget=budget)
        compile_model(model, optimizer, data.task, trainer, data.num_classes)
        resumed_here = resume is not None and done > (ends[i - 1] if i else 0)
        if resume is not None and done == resume["result"]["epochs_run"]:  # the stage the checkpoint left off in
            # Mid-stage, its optimizer goes on; at a boundary the next stage starts fresh, as without a resume.
            restore_weights(model, Path(resume["weights"]), optimizer=resumed_here)
        new_stage = result is not None and not resumed_here
        own = list(extra)
        if checkpoint_dir:  # before the caller's callbacks: an epoch is logged only once it can be resumed
            own.append(Checkpoint(checkpoint_dir, loop_state(i, result, budget, new_stage, precise)))
        if precise is not None:  # the updates this stage made before a resume
            precise.start_stage((done - int(ends[i]) + stage.epochs) * steps)
        part = fit(model, data, trainer, [*own, *callbacks], seed=seed + i + done, initial_epoch=done,
                   epochs=int(ends[i]), budget=budget, transform=transform, precise=precise)
        result = part if result is None else result.then(part, new_stage=new_stage)
        if part.stopped_by not in ("epochs", "early_stopping", "time_budget"):  # a caller's callback ended it
            break
        if budget is not None and budget.stopped:  # also when it ran out on a stage's last epoch
            if i + 1 < len(stages):
                result.stopped_by = "time_budget"
            break
    if resume is not None and done >= ends[-1]:
        # Killed after its last epoch (while evaluating or logging): nothing to train, the checkpoint's model
        # as it was, compiled as its last stage was, is what the task evaluates.
        if stages[-1].trainable is not None:
            apply_trainable(model, stages[-1].trainable)
        optimizer, _ = build_optimizer(optimizer_cfg if stages[-1].learning_rate is None else
                                       replace(optimizer_cfg, learning_rate=stages[-1].learning_rate),
                                       steps, stages[-1].epochs, first_epoch=int(ends[-1]) - stages[-1].epochs)
        compile_model(model, optimizer, data.task, trainer, data.num_classes)
        restore_weights(model, Path(resume["weights"]), optimizer=False)
    es = trainer.early_stopping
    kept = result.best_epoch if es.patience is not None and es.restore_best_weights else None
    task = get_task(data.task)
    result.warning = inference_gap(model, data, result.history, kept or result.epochs_run, trainer.batch_size,
                                   lambda y: task.targets(column(model, y)), seed, trainer.precise_bn is False)
    return result


def loop_state(stage: int, before: "FitResult | None", budget: TimeBudget | None, new_stage: bool,
               precise: PreciseBatchNorm | None = None):
    """What a checkpoint records after each epoch of this stage: the result so far (earlier stages plus this
    stage's epochs, from the logs), the time budget used and how often precise batch norm ran."""
    history = {k: list(v) for k, v in (before.history if before else {}).items()}
    start_seconds, start = (before.seconds if before else 0.0), time.perf_counter()
    starts = [*before.stage_starts, before.epochs_run + 1] if new_stage else (before.stage_starts if before else [])

    def state(epoch: int, logs: dict[str, Any]) -> dict[str, Any]:
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        result = FitResult(history, start_seconds + time.perf_counter() - start, epoch + 1, "epochs",
                           stage_starts=starts, bn_recomputes=precise.times if precise else 0)
        return {"epoch": epoch + 1, "stage": stage, "result": result.state(),
                "budget": budget.state() if budget else {}}

    return state


def fit(model: keras.Model, data: Data, trainer: TrainerConfig, callbacks: Sequence[Any] = (),
        seed: int = 0, *, initial_epoch: int = 0, epochs: int | None = None,
        budget: TimeBudget | None = None, transform=None, precise: PreciseBatchNorm | None = None) -> FitResult:
    """One `model.fit` on a compiled model, from `initial_epoch` up to `epochs` (default trainer.epochs)."""
    epochs = epochs or trainer.epochs
    if budget is None and trainer.max_minutes:
        budget = TimeBudget(trainer.max_minutes)
    if precise is None and trainer.precise_bn is not False:
        precise = PreciseBatchNorm(data.train[0], trainer.batch_size, always=trainer.precise_bn is True, seed=seed)
    divergence = Divergence()
    task = get_task(data.task)
    # Precise batch norm first (what every later one sees at an epoch's end, validation included), then the task's
    # validation scores (detection's mAP): early stopping and the loggers read them.
    own: list[Any] = [*([precise] if precise else []), *task.epoch_callbacks(data, trainer.batch_size), divergence,
                      *([budget] if budget else [])]
    early = None
    es = trainer.early_stopping
    monitor = es.monitor or task.monitor
    if data.val is None:  # no validation split: watch the training quantity instead
        monitor = monitor.removeprefix("val_")
    if es.patience is not None:
        early = keras.callbacks.EarlyStopping(monitor=monitor, patience=es.patience, min_delta=es.min_delta,
                                              restore_best_weights=es.restore_best_weights, verbose=1,
                                              mode="max" if higher_is_better(monitor) else "min")
        own.append(early)
    verbose = trainer.verbose
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    x, y = data.train
    train_batches = batches(x, task.targets(column(model, y)), trainer.batch_size, shuffle=True, seed=seed,
                            threads=trainer.threads, transform=transform)
    val_batches = None
    if data.val is not None:
        val_batches = batches(data.val[0], task.targets(column(model, data.val[1])), trainer.batch_size, shuffle=False,
                              threads=trainer.threads)
    start = time.perf_counter()
    history = model.fit(train_batches, validation_data=val_batches, epochs=epochs, initial_epoch=initial_epoch,
                        callbacks=[*own, *callbacks], verbose=verbose, shuffle=False)  # batches() shuffles
    seconds = time.perf_counter() - start
    divergence.check(model)
    epochs_run = len(history.epoch)
    stopped_by, share = "epochs", 1.0
    if budget is not None and budget.stopped and budget.share < 1:  # cut mid-epoch
        stopped_by, share = "time_budget", budget.share
    elif initial_epoch + epochs_run < epochs:  # a stop requested after the last epoch changed nothing
        if budget is not None and budget.stopped:
            stopped_by = "time_budget"
        elif early is not None and early.stopped_epoch > 0:
            stopped_by = "early_stopping"
        else:  # a caller's callback that stops training says why (a search trial's pruner: "pruned")
            stopped_by = next((c.stopped_by for c in callbacks if getattr(c, "stopped_by", None)), "epochs")
    if monitor not in history.history:  # a monitor the metrics do not log (trainer.metrics overridden)
        monitor = "val_loss" if data.val is not None else "loss"
    return FitResult(history.history, seconds, epochs_run, stopped_by, monitor,
                     min_delta=es.min_delta if early is not None else 0.0, last_epoch_share=share,
                     bn_recomputes=precise.times if precise else 0)


def evaluate(model: keras.Model, data: Data, batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics (prefixed test_) and the raw predictions, computed once each, plus what the task computes
    from the predictions (per-class scores, errors in original units, baselines…)."""
    x_test, y_test = data.test
    task = get_task(data.task)
    test_batches = batches(x_test, task.targets(column(model, y_test)), batch_size, shuffle=False)
    scores = model.evaluate(test_batches, verbose=0, return_dict=True)
    predictions = task.predict(model, x_test, batch_size)
    metrics = {f"test_{k}": float(v) for k, v in scores.items()}
    return metrics | task.evaluate(model, data, predictions, batch_size), predictions


def column(model: keras.Model, y: np.ndarray) -> np.ndarray:
    """An ensemble's targets as an (n, 1) column, so that its side-by-side training outputs (n, members)
    broadcast against them. Other models keep their targets as given: a model traced on one target shape
    fails on TensorFlow when later evaluated on the other."""
    y = np.asarray(y)
    return y.reshape(-1, 1) if y.ndim == 1 and len(members(model)) > 1 else y
