"""`nnlab evaluate RUN_ID [dataset overrides]`: score a finished run's model on another split or dataset, as a new
MLflow run in the same experiment (tagged `nnlab.evaluated_run` = the source run, `nnlab.role` = evaluation) with
the test metrics, figures and tables training logs (train.evaluate, the task's log_results).

Overrides are Hydra-style `key=value` applied to the source run's own config.yaml: `dataset.KEY=VALUE` (e.g.
`dataset.path=...`, `dataset.test_dir=...`), `seed=N`, `trainer.batch_size=N`, and `dataset=NAME`, which swaps
the whole dataset group for nnlab's preset of that name (composed with Hydra from nnlab's conf/, so the preset's
layout defaults, e.g. fruits' Training/ and Test/ folders, come with it, as on the training command line; its
`${data_root}` is the source run's). The model cannot change: it must take the dataset's input shape, serve its
task and predict as many classes as the dataset has (different class names only warn, in a tag).
"""

import argparse
import logging
import math
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from nnlab.tracking.accounts import redact
from nnlab.errors import ConfigError, NnlabError
from nnlab.imports import add_plugin_options

log = logging.getLogger(__name__)

EVALUATED_TAG = "nnlab.evaluated_run"
NAMES_DIFFER_TAG = "nnlab.class_names_differ"
ROLE = "evaluation"
ALLOWED = "dataset=NAME, dataset.KEY=VALUE, seed=N and trainer.batch_size=N"


class Evaluation(NamedTuple):
    run_id: str  # the new run
    metrics: dict[str, float]
    warnings: list[str]


def split_overrides(overrides: list[str]) -> tuple[str | None, list[str]]:
    """(the dataset preset to swap in, the key=value overrides to merge); one sentence for anything else."""
    swap, dotlist = None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"Override '{item}' is not KEY=VALUE; evaluate takes {ALLOWED}.")
        if key == "dataset":
            swap = value.strip()
        elif key.startswith("dataset.") or key in ("seed", "trainer.batch_size"):
            dotlist.append(f"{key}={value}")
        else:
            raise ConfigError(f"evaluate takes {ALLOWED}; '{key}' would change the trained model or how it was "
                              "trained, so it cannot apply to a run that is finished.")
    return swap, dotlist


def dataset_preset(name: str) -> dict[str, Any]:
    """nnlab's `dataset=NAME` preset as Hydra composes it (interpolations such as ${data_root} left in)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    from nnlab.errors import unknown_name

    def composed():
        return compose(config_name="config", overrides=[f"dataset={name}"])

    try:
        if GlobalHydra.instance().is_initialized():
            cfg = composed()
        else:
            with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
                cfg = composed()
    except MissingConfigException as err:
        raise ConfigError(unknown_name("dataset", name, err.options or []) + " (see `nnlab list`).") from None
    return OmegaConf.to_container(cfg.dataset, resolve=False)


def evaluation_config(config_text: str, overrides: list[str]):
    """The source run's resolved config with the overrides applied, resolved and typed (schema-checked)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nnlab.config import typed_config

    swap, dotlist = split_overrides(overrides)
    node = OmegaConf.create(config_text)
    try:
        if swap is not None:
            node.dataset = OmegaConf.create(dataset_preset(swap))
        node = OmegaConf.merge(node, OmegaConf.from_dotlist(dotlist))
        OmegaConf.resolve(node)
        return node, typed_config(node)
    except OmegaConfBaseException as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise ConfigError(f"The overrides {' '.join(overrides)} do not fit the dataset config ({first}); check the "
                          "key names (nnlab list, or --cfg job on the training command) and the values.") from None


def match_scale(data, model_scale: float | None):
    """The test inputs in the scale the model expects: raw pixels where it rescales them itself, pixels in
    [0, 1] where it does not (a digits model on image files, an image model on digits)."""
    have, want = data.rescale, model_scale
    if (have is None and want is None) or (have and want and math.isclose(have, want)):
        return data
    factor = (have or 1.0) / (want or 1.0)
    data.test = (np.asarray(data.test[0], np.float32) * np.float32(factor), data.test[1])
    return data


def check_fit(source, model, data, dataset_name: str) -> list[str]:
    """One sentence when the model cannot score this data (task, input shape, class count); the warnings
    (class names that differ) otherwise."""
    from nnlab.tasks import get_task
    from nnlab.use.trained import input_shape

    run_id = source.run_id
    trained = source.record.get("task") or source.run.data.tags.get("task")
    task = get_task(data.task)
    if trained and get_task(trained).name != task.name:
        raise NnlabError(f"Run {run_id}'s model does {trained}, but dataset '{dataset_name}' serves {task.name}; "
                         "evaluate it on a dataset of its own task.")
    takes = input_shape(model)
    if len(takes) != len(data.input_shape) or any(t is not None and t != d for t, d in zip(takes, data.input_shape)):
        raise NnlabError(f"Run {run_id}'s model takes inputs of shape {takes}, but dataset '{dataset_name}' gives "
                         f"{data.input_shape}; a model built for one input size does not accept another (set "
                         "dataset.image_size / color_mode to what it was trained on).")
    outputs = getattr(model, "num_classes", None) or model.output_shape[-1]  # a KerasHub detector: dict outputs
    if outputs != task.head_units(data.num_classes):
        names = source.record.get("class_names")
        trained_names = f" ({', '.join(map(str, names))})" if names else ""
        raise NnlabError(f"Run {run_id}'s model predicts {len(names) if names else outputs} classes{trained_names}, "
                         f"but dataset '{dataset_name}' has {data.num_classes} ({', '.join(data.class_names or [])}); "
                         "evaluate it on data with the same classes.")
    trained_names = source.record.get("class_names")
    if data.class_names and trained_names and list(trained_names) != list(data.class_names):
        return [f"model: {', '.join(map(str, trained_names))}; data: {', '.join(data.class_names)}"]
    return []


def evaluate(run_id: str, overrides: list[str] | tuple[str, ...] = (), uri: str | None = None,
             plugins: list[str] | tuple[str, ...] = (), trust_plugins: bool = False) -> Evaluation:
    """Score run `run_id`'s model (store: `uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db) on its test set, or
    on the one the overrides describe; log it as a new run in the source run's experiment. Plugins the run lists
    are imported only as `plugins` or with `trust_plugins` (nnlab.imports.run_plugins)."""
    from omegaconf import OmegaConf

    from nnlab import __version__
    from nnlab.data import load_dataset
    from nnlab.imports import import_keras_quietly
    from nnlab.job import run_facts
    from nnlab.job.body import name_of
    from nnlab.tasks import get_task
    from nnlab.tracking import store, track
    from nnlab.training import runtime, train
    from nnlab.use.trained import load_model, load_source, model_rescale

    overrides = list(overrides)
    client = store.client(uri)
    uri = client.tracking_uri
    source = load_source(run_id, client, plugins, trust_plugins)
    node, cfg = evaluation_config(source.config_text, overrides)
    import_keras_quietly()
    runtime = runtime.setup_runtime(cfg.seed, False, cfg.trainer.threads)  # clears Keras's session: model after it
    model = load_model(source)
    dataset_name = name_of(cfg.dataset)
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    warnings = check_fit(source, model, data, dataset_name)
    for line in warnings:
        log.warning("class names differ (same count, evaluated by index): %s", line)
    data = match_scale(data, model_rescale(model))
    task = get_task(data.task)
    train.compile_model(model, "adam", task, cfg.trainer, data.num_classes)  # the run's loss and metrics
    experiment = client.get_experiment(source.run.info.experiment_id).name
    name = f"evaluate {source.run.info.run_name or source.run_id[:8]}"
    tracking = replace(cfg.tracking, uri=uri, experiment=experiment, run_name=name, resume=None)
    tags = {EVALUATED_TAG: source.run_id, track.ROLE_TAG: ROLE, "task": task.name, "dataset": dataset_name,
            "model": name_of(cfg.model), "optimizer": name_of(cfg.optimizer), "nnlab.version": __version__,
            "overrides": " ".join(overrides) or "(none)", NAMES_DIFFER_TAG: warnings[0] if warnings else None,
            **runtime}
    with track.start_run(tracking, tags) as run:
        dataset = OmegaConf.to_container(node.dataset, resolve=True)
        run.params(track.flatten({"dataset": dataset}) | {"seed": cfg.seed, "evaluated_run": source.run_id,
                                                          "trainer.batch_size": cfg.trainer.batch_size})
        run.text(OmegaConf.to_yaml(node, resolve=True), "config.yaml")
        run_facts.log_data_facts(run, data)
        metrics, predictions = train.evaluate(model, data, cfg.trainer.batch_size)
        title = f"{name_of(cfg.model)} (run {source.run_id[:8]}) on {dataset_name}"
        metrics |= task.log_results(run, data, predictions, title)
        run.metrics(metrics)
        new_id = run.run_id
    headline = {k: round(v, 4) for k, v in metrics.items() if k in ("test_loss", task.headline)}
    print(f"\nnnlab: evaluation run {new_id} of run {source.run_id} FINISHED in experiment '{experiment}': "
          f"{headline}\n  store: {redact(uri)}")
    return Evaluation(new_id, metrics, warnings)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnlab evaluate", description="Score a finished run's model on its test "
                                     "set or another split or dataset (dataset overrides), as a new MLflow run in "
                                     "the same experiment, linked to the source run.")
    parser.add_argument("run", help="the run's id, or runs:/<id>")
    parser.add_argument("overrides", nargs="*", help=f"{ALLOWED} (Hydra style, applied to the run's config.yaml)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    add_plugin_options(parser)
    args = parser.parse_args(argv)
    evaluate(args.run, args.overrides, args.uri, args.plugins, args.trust_plugins)
