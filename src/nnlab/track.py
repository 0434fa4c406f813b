"""MLflow tracking: one run per job, which ends FINISHED, or FAILED with the error recorded.

Keras is not imported here: `nnlab report` and the sweep callback read and write the store without it."""

import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from nnlab.config import TrackingConfig

log = logging.getLogger(__name__)

# Sweep bookkeeping: MLflow nests runs by PARENT_TAG; ours mark the sweep and a run's role in it.
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "nnlab.sweep_id"
ROLE_TAG = "nnlab.role"
MAX_PARAM_CHARS = 6000  # MLflow's limit for a param value
BATCH = 100  # MLflow's limit on params per log_batch call


def resolve_uri(uri: str) -> str:
    """Make a relative SQLite or file store absolute, so every process of a sweep shares one store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def default_artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.widths": "[256, 128]", ...}; lists stay whole so they compare as values."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def git_commit(cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class RunLogger:
    """Thin wrapper over MlflowClient that batches and never logs NaN as a silent zero."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + BATCH])

    def tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        self.client.log_batch(self.run_id, tags=items)

    def metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(1000 * time.time())
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(v)]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def figure(self, fig, path: str) -> None:
        self.client.log_figure(self.run_id, fig, path)

    def file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def epoch_logger(self):
        """A Keras callback logging each epoch's metrics and learning rate here (imports Keras on first use, so
        reading the store, e.g. for `nnlab report`, stays light)."""
        from nnlab.train import EpochMetrics

        return EpochMetrics(self.metrics)

    def model(self, model, formats: Sequence[str] = ("keras",), export_dir: str | None = None) -> None:
        """Save as model.keras (and model.h5, the legacy format Netron and older tools read) into the run, and
        into `export_dir` too when given (a stable path, e.g. for model.weights of a later transfer run)."""
        # Save to a private folder first: a save that fails half-way never reaches the run or the export.
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in formats:
                path = Path(tmp) / f"model.{fmt}"
                model.save(path)
                self.file(path, "model")
                if export_dir:
                    target = Path(export_dir).expanduser()
                    target.mkdir(parents=True, exist_ok=True)
                    partial = target / f".{path.name}.partial"
                    shutil.copyfile(path, partial)
                    os.replace(partial, target / path.name)


@contextmanager
def start_run(tracking: TrackingConfig, tags: Mapping[str, Any]) -> Iterator[RunLogger]:
    uri = resolve_uri(tracking.uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    location = tracking.artifact_location or default_artifact_location(uri)
    experiment_id = ensure_experiment(client, tracking.experiment, location)
    all_tags = {**{k: str(v) for k, v in tags.items() if v is not None}, **tracking.tags}
    with mlflow.start_run(experiment_id=experiment_id, run_name=tracking.run_name, tags=all_tags) as run:
        logger = RunLogger(client, run.info.run_id)
        try:
            yield logger
        except BaseException as err:
            # mlflow.start_run marks any exception FAILED; keep the why with it, and call an interruption KILLED.
            logger.tags({"error": f"{type(err).__name__}: {err}"[:5000]})
            logger.text("".join(traceback.format_exception(err)), "error.txt")
            if isinstance(err, KeyboardInterrupt):
                mlflow.end_run("KILLED")
            raise

