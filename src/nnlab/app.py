"""The Hydra task: compose -> build -> fit -> log. One job, one MLflow run."""

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nnlab import __version__
from nnlab.errors import ConfigError, NnlabError


def primary_metric(task: str, metrics: dict[str, float]) -> float | None:
    """What a sweeper (Optuna) optimises: validation accuracy (classifiers) or loss (regressors) at the best
    epoch by the early-stopping monitor; the test value only where the run had no validation split (tune with
    a validation split: tuning on the test set makes its score optimistic)."""
    if task == "classification":
        return metrics.get("best_val_accuracy", metrics.get("test_accuracy"))
    return metrics.get("best_val_loss", metrics.get("test_loss"))


def import_plugins(plugins: list[str]) -> None:
    """Import user modules (dotted names, or .py paths relative to the working directory) so they register."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = Path(plugin).expanduser().resolve()
            if not path.is_file():
                raise NnlabError(f"Plugin file {path} does not exist; fix the `plugins` list in your config.")
            spec = importlib.util.spec_from_file_location(f"nnlab_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(plugin)
            except ModuleNotFoundError as err:
                raise NnlabError(f"Plugin module '{plugin}' cannot be imported ({err}); install it, "
                                 "or list a .py file path in `plugins` instead.") from err


def run_tags(cfg: dict[str, Any], commit: str | None) -> dict[str, Any]:
    return {
        "dataset": cfg["dataset"]["name"],
        "model": cfg["model"]["name"],
        "optimizer": cfg["optimizer"]["name"],
        "mlflow.source.git.commit": commit,
        "nnlab.version": __version__,
        **hydra_tags(),
    }


def join_sweep(context, tracking: dict[str, Any], tags: dict[str, Any]) -> tuple[dict, dict]:
    """A multirun job is a child of the sweep's parent run, in the sweep's store and experiment (MLflow nests
    runs within one experiment); a job whose config asks for another experiment says so in a tag."""
    import logging

    tags = tags | context.child_tags()
    if tracking["experiment"] != context.experiment:
        logging.getLogger(__name__).warning("sweep job logs to the sweep's experiment '%s', not '%s'",
                                            context.experiment, tracking["experiment"])
        tags["nnlab.requested_experiment"] = tracking["experiment"]
    name = tracking["run_name"] or context.job_name(hydra_overrides()) or None
    return {**tracking, "uri": context.uri, "experiment": context.experiment, "run_name": name}, tags


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def hydra_tags() -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {"overrides": " ".join(hydra_overrides()) or "(none)",
            "hydra.output_dir": HydraConfig.get().runtime.output_dir}


def train_and_log(cfg: dict[str, Any], yaml_text: str, run) -> tuple[str, dict[str, float], str]:
    from nnlab import train
    from nnlab.data import load_dataset

    trainer = cfg["trainer"]
    run.text(yaml_text, "config.yaml")
    run.tags(train.setup_runtime(cfg["seed"], trainer["mixed_precision"], trainer["threads"]))
    data = load_dataset(cfg["dataset"], seed=cfg["seed"])
    log_data_facts(run, data)
    model = build(cfg["model"], data, cfg["augment"], cfg["seed"], run)
    run.text(summary(model), "model_summary.txt")
    result = train.train(model, data, trainer, cfg["optimizer"], callbacks=[run.epoch_logger()], seed=cfg["seed"])
    metrics, predictions = train.evaluate(model, data, trainer["batch_size"])
    metrics |= {"params": model.count_params(), "training_seconds": result.seconds, "epochs_run": result.epochs_run}
    if result.best_epoch:
        metrics["best_epoch"] = result.best_epoch
        metrics |= {f"best_{k}": v[result.best_epoch - 1] for k, v in result.history.items()}
    run.tags({"stopped_by": result.stopped_by, "stage_starts": ",".join(map(str, result.stage_starts)) or None})
    title = f"{cfg['model']['name']} on {cfg['dataset']['name']}"
    metrics |= log_figures_and_reports(run, data, result, predictions, title)
    run.metrics(metrics)
    if trainer["save_model"]:
        formats = ("keras", "h5") if trainer["save_h5"] else ("keras",)
        run.model(model, formats, trainer["export_dir"])
    if trainer["plot_model"]:
        log_architecture(run, model)
    return data.task, metrics, result.stopped_by


def log_architecture(run, model) -> None:
    """The architecture diagram (keras.utils.plot_model); where Graphviz is missing, a tag says so instead."""
    import tempfile

    from nnlab import plots

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "architecture.png"
        missing = plots.architecture(model, path)
        if missing:
            run.tags({"architecture_diagram": f"skipped: {missing}"})
        else:
            run.file(path)


def log_data_facts(run, data) -> None:
    """Sizes, shape and what the loader skipped (counts as params, the file list as data_problems.txt)."""
    facts = {f"{k}_size": v for k, v in data.sizes().items()} | {"input_shape": data.input_shape}
    facts |= {k: v for k, v in data.info.items() if k != "problems"}
    run.params({f"data.{k}": v for k, v in facts.items()})
    if data.info.get("problems"):
        run.text("\n".join(data.info["problems"]) + "\n", "data_problems.txt")


def build(model_cfg: dict[str, Any], data, augment: dict[str, Any], seed: int, run=None):
    from nnlab.data.augment import input_layers
    from nnlab.models import build_model, solve_param_budget

    layers = input_layers(data.rescale, augment, seed)
    name = model_cfg["name"]
    try:
        if model_cfg.get("param_budget"):
            model_cfg = solve_param_budget(model_cfg, data.input_shape, data.task, data.num_classes)
            if run is not None:
                run.params({"model.solved_width": model_cfg["width"]})
        return build_model(model_cfg, data.input_shape, data.task, data.num_classes, layers)
    except (ValueError, TypeError) as err:
        raise NnlabError(f"Cannot build model '{name}' from its config ({err}); fix conf/model/{name}.yaml "
                         "or the override.") from err


def log_figures_and_reports(run, data, result, predictions, title: str) -> dict[str, float]:
    """Curves for every job; confusion matrix and per-class report for classifiers. Returns extra metrics."""
    from nnlab import plots
    from nnlab.metrics import class_report

    fig = plots.learning_curves(result.history, result.best_epoch, title, result.stage_starts)
    run.figure(fig, "curves.png")
    plots.close(fig)
    if data.task != "classification":
        return {}
    report = class_report(data.test[1], predictions, data.class_names)
    run.text(report.text, "classification_report.txt")
    run.text(json.dumps(report.table, indent=2), "classification_report.json")
    fig = plots.confusion_figure(report.y_true, report.y_pred, report.labels, report.class_names,
                                 f"Confusion matrix: {title} (test set)")
    run.figure(fig, "confusion_matrix.png")
    plots.close(fig)
    return report.metrics()


def summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines)


def run(cfg: DictConfig) -> float | None:
    """Train one configured experiment and log it; returns the metric a sweeper optimises."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:  # before a run exists: nothing to clean up
        raise ConfigError(f"{', '.join(missing)} must be set for this config: add e.g. {missing[0]}=... to the "
                          "command line or to your experiment YAML.")
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    import_plugins(container["plugins"])
    from nnlab import sweep, track

    tracking, tags = container["tracking"], run_tags(container, track.git_commit())
    context = sweep.job_context()
    if container["trainer"]["threads"] is None:
        container["trainer"]["threads"] = sweep.parallel_threads(context.parallel if context else None)
    if context is not None:
        tracking, tags = join_sweep(context, tracking, tags)
    with track.start_run(tracking, tags) as run:
        run.params(track.flatten(container))
        task, metrics, stopped_by = train_and_log(container, yaml_text, run)
        run_id = run.run_id
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("test_accuracy", "test_loss", "test_mae")}
    uri = track.resolve_uri(tracking["uri"])
    print(f"\nnnlab: run {run_id} FINISHED in experiment '{tracking['experiment']}' "
          f"({stopped_by}): {headline}\n  store: {uri}\n  browse: make ui  (or: mlflow ui --backend-store-uri {uri})")
    return primary_metric(task, metrics)
