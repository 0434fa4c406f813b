"""The Hydra task: compose -> build -> fit -> log. One job, one MLflow run."""

import importlib
import importlib.util
import os
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nnlab import __version__, run_facts
from nnlab.config import AugmentConfig, Config, TrackingConfig
from nnlab.config.train import TrainerConfig
from nnlab.errors import ConfigError, NnlabError
from nnlab.tasks import Task, get_task


CHECKPOINT_TAG = "nnlab.checkpoint"
EXAMPLE_ROWS = 2  # test inputs saved as the MLflow Model's input example (and its signature's sample)


def import_plugins(plugins: list[str]) -> None:
    """Import user modules (dotted names, or .py paths relative to the working directory) so they register.
    A plugin that fails to import is named with the file and line where it failed."""
    import traceback

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).expanduser().resolve()
                if not path.is_file():
                    raise NnlabError(f"Plugin file {path} does not exist; fix the `plugins` list in your config.")
                spec = importlib.util.spec_from_file_location(f"nnlab_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(spec.name, None)  # no half-imported module left behind
                    raise
            else:
                try:
                    importlib.import_module(plugin)
                except ModuleNotFoundError as err:
                    if err.name and plugin != err.name and not plugin.startswith(f"{err.name}."):
                        raise  # the plugin exists; something it imports does not (reported below)
                    raise NnlabError(f"Plugin module '{plugin}' cannot be imported ({err}); install it, "
                                     "or list a .py file path in `plugins` instead.") from err
        except NnlabError:
            raise
        except SyntaxError as err:  # its message alone ("invalid syntax") does not say where
            code = f": {err.text.strip()}" if err.text and err.text.strip() else ""
            raise NnlabError(f"Plugin '{plugin}' has a syntax error ({err.msg}) in {err.filename}, line "
                             f"{err.lineno}{code}; fix the file or remove it from `plugins`.") from err
        except Exception as err:
            frames = traceback.extract_tb(err.__traceback__)
            mine = Path(plugin).expanduser().resolve() if plugin.endswith(".py") else None
            frame = ([f for f in frames if Path(f.filename) == mine] or frames)[-1]  # its own line, else the last
            what = (str(err).strip().splitlines() or [""])[0]
            raise NnlabError(f"Plugin '{plugin}' failed while importing: {type(err).__name__}: {what} (in "
                             f"{frame.filename}, line {frame.lineno}); fix the plugin or remove it from "
                             "`plugins`.") from err


def run_tags(cfg: Config, commit: str | None) -> dict[str, Any]:
    return {
        "dataset": name_of(cfg.dataset),
        "model": name_of(cfg.model),
        "optimizer": name_of(cfg.optimizer),
        "mlflow.source.git.commit": commit,
        "nnlab.version": __version__,
        **hydra_tags(),
    }


def name_of(node: Any) -> str:
    """A group's builder name: typed configs carry it as an attribute, a plugin's schema-less node as a key."""
    return node["name"] if isinstance(node, dict) else node.name


def join_sweep(context, tracking: TrackingConfig, tags: dict[str, Any]) -> tuple[TrackingConfig, dict]:
    """A multirun job is a child of the sweep's parent run, in the sweep's store and experiment (MLflow nests
    runs within one experiment); a job whose config asks for another experiment says so in a tag."""
    import logging

    tags = tags | context.child_tags()
    if tracking.experiment != context.experiment:
        logging.getLogger(__name__).warning("sweep job logs to the sweep's experiment '%s', not '%s'",
                                            context.experiment, tracking.experiment)
        tags["nnlab.requested_experiment"] = tracking.experiment
    name = tracking.run_name or context.job_name(hydra_overrides()) or None
    return replace(tracking, uri=context.uri, experiment=context.experiment, run_name=name), tags


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_tags() -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {"overrides": " ".join(hydra_overrides()) or "(none)",
            "hydra.output_dir": HydraConfig.get().runtime.output_dir}


def train_and_log(cfg: Config, yaml_text: str, run, resume: dict[str, Any] | None = None
                  ) -> tuple[Task, dict[str, float], str]:
    """Load, build, train (from a checkpoint's `resume` state if given), evaluate and log into `run`; on
    `trainer.devices` devices (nnlab.distribute), from the runtime's setup until the job ends, however it ends."""
    from contextlib import ExitStack

    with ExitStack() as exits:
        return job_body(cfg, yaml_text, run, resume, exits)


def job_body(cfg: Config, yaml_text: str, run, resume: dict[str, Any] | None, exits
             ) -> tuple[Task, dict[str, float], str]:
    import_keras_quietly()
    import numpy as np

    from nnlab import distribute, plots, train
    from nnlab.data import load_dataset

    trainer = cfg.trainer
    folder = resume["folder"] if resume else checkpoint_folder(trainer, run.run_id)
    run.tags({CHECKPOINT_TAG: folder})
    run.text(yaml_text, "config.yaml")
    run.tags(train.setup_runtime(cfg.seed, trainer.mixed_precision, trainer.threads))
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
    result = train.train(model, data, trainer, cfg.optimizer, callbacks=[*parallel.callbacks, run.epoch_logger()],
                         seed=cfg.seed, transform=transform, checkpoint_dir=folder, resume=resume)
    metrics, predictions = train.evaluate(model, data, trainer.batch_size)
    metrics |= {"params": model.count_params(), "training_seconds": result.seconds, "epochs_run": result.epochs_run}
    if result.best_epoch:
        metrics["best_epoch"] = result.best_epoch
        metrics |= {f"best_{k}": v[result.best_epoch - 1] for k, v in result.history.items()}
    run.tags({"stopped_by": result.stopped_by, "stage_starts": ",".join(map(str, result.stage_starts)) or None})
    title = f"{name_of(cfg.model)} on {name_of(cfg.dataset)}"
    fig = plots.learning_curves(result.history, result.best_epoch, title, result.stage_starts)
    run.figure(fig, "curves.png")
    plots.close(fig)
    metrics |= task.log_results(run, data, predictions, title)
    run.metrics(metrics)
    run.note(f"{title}: {task.describe(metrics)}, {how_it_stopped(result, trainer)}")
    if trainer.save_model:
        run.model(model, ("keras", "h5") if trainer.save_h5 else ("keras",), trainer.export_dir,
                  example=np.array(data.test[0][:EXAMPLE_ROWS]), serving=task.serving_model(model))
    if trainer.plot_model:
        run_facts.log_architecture(run, model)
    if trainer.netron:
        from nnlab import netron_view

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


def import_keras_quietly() -> None:
    """TensorFlow's native libraries print start-up lines (absl, oneDNN) to file descriptor 2 while they load,
    whatever TF_CPP_MIN_LOG_LEVEL says; below level 2 (the CLI's default) they stay visible, as asked."""
    if "keras" in sys.modules or int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0) < 2:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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


def run(cfg: DictConfig) -> float | None:
    """Train one configured experiment and log it; returns the metric a sweeper optimises."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:  # before a run exists: nothing to clean up
        raise ConfigError(f"{', '.join(missing)} must be set for this config: add e.g. {missing[0]}=... to the "
                          "command line or to your experiment YAML.")
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    import_plugins(list(cfg.plugins))
    typed: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    from nnlab import sweep, track

    if typed.tracking.resume:  # the config form of `nnlab resume`, e.g. for a requeued cluster job
        from nnlab.resume import resume

        return resume(typed.tracking.resume, typed.tracking.uri)

    track.install_signal_handlers()  # SIGTERM ends this job's run KILLED, in joblib/submitit workers too
    tracking, tags = typed.tracking, run_tags(typed, track.git_commit())
    context = sweep.job_context()
    if typed.trainer.threads is None:
        typed.trainer.threads = sweep.parallel_threads(context.parallel if context else None)
    if context is not None:
        tracking, tags = join_sweep(context, tracking, tags)
    with track.start_run(tracking, tags) as run:
        run.params(track.flatten(OmegaConf.to_container(cfg, resolve=True) | {"trainer": asdict(typed.trainer)}))
        task, metrics, stopped_by = train_and_log(typed, yaml_text, run)
        run_id = run.run_id
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("test_loss", task.headline)}
    uri = track.resolve_uri(tracking.uri)
    print(f"\nnnlab: run {run_id} FINISHED in experiment '{tracking.experiment}' "
          f"({stopped_by}): {headline}\n  store: {uri}\n  browse: make ui  (or: mlflow ui --backend-store-uri {uri})")
    return task.objective_value(metrics)
