"""`nnlab resume RUN_ID`: continue an interrupted run from its last checkpoint, in the same MLflow run.

The run's own config.yaml (resolved when it started) rebuilds the job; its `nnlab.checkpoint` tag says where the
checkpoint is. The run goes back to RUNNING, epochs count on from the checkpoint (metric steps continue with no
duplicate and no gap), finished stages are skipped, the time budget goes on from what was used, and the run ends
FINISHED as a fresh run would.
"""

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.job.body import CHECKPOINT_TAG


def find_checkpoint(client: MlflowClient, run_id: str) -> tuple[Any, dict[str, Any], Path]:
    """(run, checkpoint state, weights file), or one sentence saying why the run cannot be resumed."""
    from nnlab.tracking.store import get_run
    from nnlab.training.callbacks import load_checkpoint

    run = get_run(client, run_id)
    if run.info.status == "FINISHED":
        raise NnlabError(f"Run {run_id} is already FINISHED; there is nothing to resume (start a new run instead).")
    folder = run.data.tags.get(CHECKPOINT_TAG)
    found = load_checkpoint(folder) if folder else None
    if found is None:
        where = f"in {folder}" if folder else "(it was started with trainer.checkpoint=false or before checkpoints)"
        raise NnlabError(f"Run {run_id} has no checkpoint {where}, so it cannot be resumed; start it again.")
    return run, *found




def missing_epochs(client: MlflowClient, run_id: str, state: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Epochs the checkpoint holds that the store lacks (the process died between the checkpoint and the
    epoch's metrics): step -> metrics, to log before training goes on."""
    logged = {m.step for m in client.get_metric_history(run_id, "loss")}
    history = state["result"]["history"]
    out = {}
    for step in range(1, state["epoch"] + 1):
        if step not in logged:
            out[step] = {k: v[step - 1] for k, v in history.items() if len(v) >= step and math.isfinite(v[step - 1])}
    return out


def resume(run_id: str, uri: str | None = None) -> float | None:
    """Continue run `run_id` of the store at `uri`; returns what a sweeper optimises, as `app.run` does."""
    from omegaconf import OmegaConf

    from nnlab.config import typed_config
    from nnlab.imports import import_plugins
    from nnlab.job.body import train_and_log
    from nnlab.tracking import store, track

    track.install_signal_handlers()
    client = store.client(uri)
    uri = client.tracking_uri
    run, state, weights = find_checkpoint(client, run_id)
    yaml_text = store.run_config(client, run_id)
    import_plugins(list(OmegaConf.create(yaml_text).get("plugins") or []))
    cfg = typed_config(yaml_text)
    experiment = client.get_experiment(run.info.experiment_id).name
    tracking = replace(cfg.tracking, uri=uri, experiment=experiment, run_name=run.info.run_name, resume=None)
    with track.start_run(tracking, {"nnlab.resumed_from_epoch": state["epoch"]}, run_id=run_id) as logger:
        for step, metrics in missing_epochs(client, run_id, state).items():
            logger.metrics(metrics, step=step)
        task, metrics, stopped_by = train_and_log(
            cfg, yaml_text, logger, resume={**state, "weights": str(weights), "folder": run.data.tags[CHECKPOINT_TAG]})
    print(f"\nnnlab: run {run_id} resumed from epoch {state['epoch']} and FINISHED ({stopped_by}): "
          f"{ {k: round(v, 4) for k, v in metrics.items() if k in ('test_loss', task.headline)} }\n  store: {uri}")
    return task.objective_value(metrics)
