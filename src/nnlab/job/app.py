"""The Hydra task: compose -> build -> fit -> log. One job, one MLflow run (or, with `tracking.resume`, an
interrupted run continued)."""

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nnlab import __version__
from nnlab.config import Config, TrackingConfig
from nnlab.errors import ConfigError
from nnlab.files import write_text
from nnlab.imports import import_plugins
from nnlab.job.body import name_of, train_and_log
from nnlab.tracking.accounts import own_experiment, redact
from nnlab.tracking.logged_model import model_name


def run_tags(cfg: Config, commit: str | None) -> dict[str, Any]:
    return {
        "dataset": name_of(cfg.dataset),
        "model": name_of(cfg.model),
        "optimizer": name_of(cfg.optimizer),
        "mlflow.source.git.commit": commit,
        "nnlab.version": __version__,
        **hydra_tags(),
    }


def join_sweep(context, tracking: TrackingConfig, tags: dict[str, Any]) -> tuple[TrackingConfig, dict]:
    """A multirun job is a child of the sweep's parent run, in the sweep's store and experiment (MLflow nests
    runs within one experiment); a job whose config asks for another experiment says so in a tag."""
    import logging

    from hydra.core.hydra_config import HydraConfig

    tags = tags | context.child_tags(HydraConfig.get().job.get("num") if HydraConfig.initialized() else None)
    if tracking.experiment != context.experiment:
        logging.getLogger(__name__).warning("sweep job logs to the sweep's experiment '%s', not '%s'",
                                            context.experiment, tracking.experiment)
        tags["nnlab.requested_experiment"] = tracking.experiment
    name = tracking.run_name or context.job_name(hydra_overrides()) or None
    return replace(tracking, uri=context.uri, experiment=context.experiment, run_name=name), tags


def default_run_name(cfg: Config) -> str:
    """A run's name where tracking.run_name is unset and no sweep names it: the experiment (or sweep) preset chosen
    on the command line (`+experiment=fashion_cnn_adam`), else the model and the dataset (`cnn_fashion_mnist`)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return choices.get("experiment") or choices.get("sweep") or f"{name_of(cfg.model)}_{name_of(cfg.dataset)}"


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_tags() -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {"overrides": redact(" ".join(hydra_overrides())) or "(none)",
            "hydra.output_dir": HydraConfig.get().runtime.output_dir}


def scrub_hydra_files() -> None:
    """Hydra saves the command line and the config in the job's folder (and a sweep's) as typed, where others may
    read them: a store URL typed with a password in it is kept there without it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    files = list(Path(hc.runtime.output_dir, hc.output_subdir).glob("*.yaml")) if hc.output_subdir else []
    if hc.mode == RunMode.MULTIRUN:
        files.append(Path(hc.sweep.dir) / "multirun.yaml")
    for path in files:
        text = path.read_text() if path.is_file() else ""
        if redact(text) != text:
            write_text(path, redact(text))


def run(cfg: DictConfig) -> float | None:
    """Train one configured experiment and log it; returns the metric a sweeper optimises."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:  # before a run exists: nothing to clean up
        raise ConfigError(f"{', '.join(missing)} must be set for this config: add e.g. {missing[0]}=... to the "
                          "command line or to your experiment YAML.")
    yaml_text = redact(OmegaConf.to_yaml(cfg, resolve=True))  # what the run records: no password of a URL
    scrub_hydra_files()
    import_plugins(list(cfg.plugins))
    typed: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    from nnlab.job import cores, search, slurm, sweep
    from nnlab.tracking import track

    if typed.tracking.resume:  # the config form of `nnlab resume`, e.g. for a requeued cluster job
        from nnlab.job.resume import resume

        return resume(typed.tracking.resume, typed.tracking.uri, plugins=list(typed.plugins))  # the user's config

    track.install_signal_handlers()  # SIGTERM ends this job's run KILLED, in joblib/submitit workers too
    tracking, tags = typed.tracking, run_tags(typed, track.git_commit())
    context = sweep.job_context()
    if typed.trainer.threads is None:
        typed.trainer.threads = cores.parallel_threads(context.parallel if context else None)
    if context is not None:
        tracking, tags = join_sweep(context, tracking, tags)
    job_tags = slurm.job_tags()
    tags |= job_tags
    earlier = slurm.requeued_run(tracking.uri, tracking.experiment, context.parent_run_id if context else None)
    if earlier:  # SLURM started this job again (preempted, timed out, requeued): its run goes on
        from nnlab.job.resume import resume

        return resume(earlier, tracking.uri, plugins=list(typed.plugins), tags=job_tags)
    if not tracking.run_name:  # not MLflow's random "thundering-ox-14"
        tracking = replace(tracking, run_name=default_run_name(typed))
    trial = search.job_trial()  # a trial of nnlab's Optuna sweeper: reports epochs, may be pruned
    with track.start_run(tracking, tags | (trial.start_tags() if trial else {})) as run:
        params = track.flatten(OmegaConf.to_container(cfg, resolve=True) | {"trainer": asdict(typed.trainer)})
        run.params({k: redact(v) for k, v in params.items()})
        task, metrics, stopped_by = train_and_log(typed, yaml_text, run, callbacks=trial.callbacks if trial else None)
        if trial:
            trial.end(run)
        run_id = run.run_id
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("test_loss", task.headline)}
    store = track.resolve_uri(tracking.uri)
    uri = redact(store)
    model = f"\n  model: runs:/{run_id}/{model_name(name_of(typed.model))}" if typed.trainer.save_model else ""
    browse = uri if uri.startswith(("http://", "https://")) else f"make ui  (or: mlflow ui --backend-store-uri {uri})"
    print(f"\nnnlab: run {run_id} FINISHED in experiment '{own_experiment(store, tracking.experiment)}' "
          f"({stopped_by}): {headline}\n  store: {uri}{model}\n  browse: {browse}")
    return task.objective_value(metrics)
