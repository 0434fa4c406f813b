"""The body of a job: load the data, build the model, train it, evaluate it and log everything into one MLflow
run (a new one, or a run `nnlab resume` reopened)."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nnlab.config import AugmentConfig, Config
from nnlab.config.train import TrainerConfig
from nnlab.errors import NnlabError
from nnlab.imports import import_keras_quietly
from nnlab.job import run_facts
from nnlab.tasks import Task, get_task

CHECKPOINT_TAG = "nnlab.checkpoint"
EXAMPLE_ROWS = 2  # test inputs saved as the MLflow Model's input example (and its signature's sample)


def name_of(node: Any) -> str:
    """A group's builder name: typed configs carry it as an attribute, a plugin's schema-less node as a key."""
    return node["name"] if isinstance(node, dict) else node.name


def train_and_log(cfg: Config, yaml_text: str, run, resume: dict[str, Any] | None = None,
                  callbacks: Callable[[Task], list] | None = None) -> tuple[Task, dict[str, float], str]:
    """Load, build, train (from a checkpoint's `resume` state if given), evaluate and log into `run`; on
    `trainer.devices` devices (nnlab.training.distribute), from the runtime's setup until the job ends, however it ends.
    `callbacks(task)`: more Keras callbacks for training (a search trial's pruning)."""
    from contextlib import ExitStack

    with ExitStack() as exits:
        return job_body(cfg, yaml_text, run, resume, exits, callbacks)


def job_body(cfg: Config, yaml_text: str, run, resume: dict[str, Any] | None, exits,
             callbacks: Callable[[Task], list] | None = None) -> tuple[Task, dict[str, float], str]:
    import_keras_quietly()
    import numpy as np

    from nnlab import plots
    from nnlab.data import load_dataset
    from nnlab.training import batchnorm, distribute, runtime, train

    trainer = cfg.trainer
    folder = resume["folder"] if resume else checkpoint_folder(trainer, run.run_id)
    if folder and not resume:  # this process's until the run's end is recorded (`nnlab resume` holds its own)
        from nnlab.training.checkpoints import claim

        run.hold(claim(folder, run.run_id))
    run.tags({CHECKPOINT_TAG: folder})
    run.text(yaml_text, "config.yaml")
    run.tags(runtime.setup_runtime(cfg.seed, trainer.mixed_precision, trainer.threads))
    parallel = exits.enter_context(distribute.data_parallel(trainer.devices, trainer.batch_size))
    run.tags({"replicas": parallel.replicas})  # the replicas in sync (1: one device)
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    task = get_task(data.task)
    run.tags({"task": task.name})
    run_facts.log_data_facts(run, data)
    run.text(data.preprocessing_json(), "preprocessing.json")  # what `nnlab predict` needs to feed new inputs
    run.datasets({"train": data.train, "val": data.val, "test": data.test}, name_of(cfg.dataset),
                 data_source(cfg.dataset))
    image_only, transform = task.augmentation(cfg.augment, cfg.seed)
    model = build(cfg.model, data, image_only, cfg.seed, run)
    run.text(run_facts.summary(model), "model_summary.txt")
    result = train.train(model, data, trainer, cfg.optimizer, callbacks=[*parallel.callbacks, *(callbacks(task) if callbacks else []),
                                                                run.epoch_logger()],
                         seed=cfg.seed, transform=transform, checkpoint_dir=folder, resume=resume)
    metrics, predictions = train.evaluate(model, data, trainer.batch_size)
    metrics |= {"params": model.count_params(), "training_seconds": result.seconds, "epochs_run": result.epochs_run}
    if result.best_epoch:
        metrics["best_epoch"] = result.best_epoch
        metrics |= {f"best_{k}": v[result.best_epoch - 1] for k, v in result.history.items()}
    run.tags({"stopped_by": result.stopped_by, "stage_starts": ",".join(map(str, result.stage_starts)) or None,
              "precise_bn": batchnorm.tag(trainer.precise_bn, result.bn_recomputes,
                                          min(batchnorm.IMAGES, len(data.train[0])), model)})
    title = f"{name_of(cfg.model)} on {name_of(cfg.dataset)}"
    fig = plots.learning_curves(result.history, result.best_epoch, title, result.stage_starts)
    run.figure(fig, "curves.png")
    plots.close(fig)
    metrics |= task.log_results(run, data, predictions, title)
    run.metrics(metrics)
    run.note(f"{title}: {task.describe(metrics)}, {how_it_stopped(result, trainer)}"
             + (f". Warning: {result.warning}" if result.warning else ""))
    if trainer.save_model:
        run.model(model, ("keras", "h5") if trainer.save_h5 else ("keras",), trainer.export_dir,
                  example=np.array(data.test[0][:EXAMPLE_ROWS]), serving=task.serving_model(model),
                  name=name_of(cfg.model))  # the UI's Models column: `cnn`, not `model`; runs:/<id>/cnn
    if trainer.plot_model:
        run_facts.log_architecture(run, model)
    if trainer.netron:
        from nnlab.job import netron_view

        netron_view.log_drawing(run, model, "h5" if trainer.save_h5 else "keras")
    if folder and not trainer.keep_checkpoint:  # the run is complete: nothing left to resume
        shutil.rmtree(folder, ignore_errors=True)
    return task, metrics, result.stopped_by


def how_it_stopped(result, trainer: TrainerConfig) -> str:
    """The end of training in words, for the run's description."""
    planned = sum(stage.epochs for stage in trainer.stages) if trainer.stages else trainer.epochs
    if result.stopped_by == "time_budget":
        if result.last_epoch_share < 1:
            share = f"{result.last_epoch_share:.0%}" if result.last_epoch_share >= 0.01 else "under 1%"
            return f"stopped by the time budget {share} into epoch {result.epochs_run} of {planned}"
        return f"stopped by the time budget after epoch {result.epochs_run} of {planned}"
    if result.stopped_by == "early_stopping":
        best = f" (best: epoch {result.best_epoch})" if result.best_epoch else ""
        return f"stopped early after epoch {result.epochs_run} of {planned}{best}"
    if result.stopped_by == "epochs":
        return f"trained all {result.epochs_run} epochs" if result.epochs_run != 1 else "trained its one epoch"
    return f"stopped by {result.stopped_by} after epoch {result.epochs_run} of {planned}"


def data_source(dataset: Any) -> str:
    """Where a dataset's examples came from, for its MLflow dataset inputs: "generated" for a loader that makes
    them (its config has a `count`), else its files (`dataset.path`, where that exists), else "bundled" (shipped
    inside an installed package, such as scikit-learn's digits)."""
    fields = dataset if isinstance(dataset, dict) else vars(dataset)
    if "count" in fields:
        return "generated"
    path = fields.get("path")
    if path and Path(path).expanduser().exists():
        return str(Path(path).expanduser().resolve())
    return "bundled"


def checkpoint_folder(trainer: TrainerConfig, run_id: str) -> str | None:
    """Where this job's checkpoint lives: trainer.checkpoint_dir, else the job's Hydra output folder, else
    ./checkpoints/<run id> (a job run from Python)."""
    from hydra.core.hydra_config import HydraConfig

    if not trainer.checkpoint:
        return None
    if trainer.checkpoint_dir:
        return str(Path(trainer.checkpoint_dir).expanduser().resolve())
    if HydraConfig.initialized():
        return str(Path(HydraConfig.get().runtime.output_dir) / "checkpoint")
    return str(Path("checkpoints", run_id).resolve())


def build(model_cfg: Any, data, augment: AugmentConfig, seed: int, run=None):
    from nnlab.config import builder_kwargs
    from nnlab.data.augment import input_layers
    from nnlab.models import build_model, solve_param_budget

    layers = input_layers(data.rescale, augment, seed)
    kwargs = builder_kwargs("model", model_cfg)
    name = kwargs["name"]
    try:
        if kwargs.get("param_budget"):
            kwargs = solve_param_budget(kwargs, data.input_shape, data.task, data.num_classes)
            if run is not None:
                run.params({"model.solved_width": kwargs["width"]})
        return build_model(kwargs, data.input_shape, data.task, data.num_classes, layers)
    except (ValueError, TypeError) as err:
        raise NnlabError(f"Cannot build model '{name}' from its config ({err}); fix conf/model/{name}.yaml "
                         "or the override.") from err
