"""`nnlab resume RUN_ID`: continue an interrupted run from its last checkpoint, in the same MLflow run.

The run's own config.yaml (resolved when it started) rebuilds the job; its `nnlab.checkpoint` tag says where the
checkpoint is. The run goes back to RUNNING, epochs count on from the checkpoint (metric steps continue with no
duplicate and no gap), finished stages are skipped, the time budget goes on from what was used, and the run ends
FINISHED as a fresh run would.

One owner: the process that trains a run holds its checkpoint folder (`checkpoints.claim`, an OS lock released
when the process dies) until the run's end is recorded. A second `nnlab resume` (or `tracking.resume` job) of a
run whose owner lives refuses in one sentence naming it (host, pid), before it touches the run; the run of a
dead owner is taken over. The checkpoint is read once the folder is held, so a run that its owner finished
meanwhile is refused as FINISHED.
"""

import math
import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnlab.tracking.accounts import redact
from nnlab.errors import NnlabError
from nnlab.job.body import CHECKPOINT_TAG

FALLBACK_TAG = "nnlab.checkpoint_fallback"  # the damaged checkpoint a resume passed over, and the one it used


def resumable(run: Run) -> str:
    """The run's checkpoint folder, or one sentence saying why the run cannot be resumed: it is FINISHED, its
    process still runs on this host, or it has no checkpoint folder."""
    from nnlab.tracking.runs import own_verdict
    from nnlab.tracking.track import HOST_TAG, PID_TAG

    run_id, tags = run.info.run_id, run.data.tags
    if run.info.status == "FINISHED":
        raise NnlabError(f"Run {run_id} is already FINISHED; there is nothing to resume (start a new run instead).")
    if (run.info.status == "RUNNING" and tags.get(HOST_TAG) == socket.gethostname() and PID_TAG in tags
            and tags[PID_TAG] != str(os.getpid()) and own_verdict(run, socket.gethostname(), time.time(), None) is None):
        pid = tags[PID_TAG]  # its process lives (an nnlab without checkpoint owners, or one that has none)
        raise NnlabError(f"Run {run_id} is being trained by process {pid} on {tags[HOST_TAG]}; it cannot be resumed "
                         f"while that process runs: wait for it to end, or stop it (kill {pid}) and resume again.")
    folder = tags.get(CHECKPOINT_TAG)
    if not folder or not Path(folder).is_dir():
        where = f"in {folder}" if folder else "(it was started with trainer.checkpoint=false or before checkpoints)"
        raise NnlabError(f"Run {run_id} has no checkpoint {where}, so it cannot be resumed; start it again.")
    return folder


def find_checkpoint(client: MlflowClient, run_id: str) -> tuple[Any, dict[str, Any], Path]:
    """(run, checkpoint state, weights file), or one sentence saying why the run cannot be resumed. Call it
    holding the folder (`checkpoints.claim`): the run as it is now, after any earlier owner ended."""
    from nnlab.tracking.store import get_run
    from nnlab.training.checkpoints import load_checkpoint

    run = get_run(client, run_id)
    folder = resumable(run)
    found = load_checkpoint(folder)
    if found is None:
        raise NnlabError(f"Run {run_id} has no checkpoint in {folder}, so it cannot be resumed; start it again.")
    return run, *found


def fallback_note(client: MlflowClient, run_id: str, state: dict[str, Any]) -> str | None:
    """What a resume from an older checkpoint (the newest was damaged) says in the run's tags: which file was
    damaged, and which logged epochs are trained, and so logged, a second time (MLflow keeps both values)."""
    if not state.get("fallback"):
        return None
    last = max((m.step for m in client.get_metric_history(run_id, "loss")), default=0)
    again = f"; epochs {state['epoch'] + 1}-{last} were logged already and are logged again" if last > state["epoch"] \
        else ""
    return state["fallback"] + again


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


def resume(run_id: str, uri: str | None = None, plugins: list[str] | tuple[str, ...] = (),
           trust_plugins: bool = False, tags: dict[str, Any] | None = None) -> float | None:
    """Continue run `run_id` of the store at `uri`; returns what a sweeper optimises, as `app.run` does. The
    plugins the run's stored config lists are imported only as `plugins` (the user's copies) or with
    `trust_plugins`; a listed one neither passed nor trusted is refused before the run is touched
    (nnlab.imports.run_plugins). `tags`: more tags for the run (a requeued SLURM job's restart count)."""
    from omegaconf import OmegaConf

    from nnlab.config import typed_config
    from nnlab.imports import run_plugins
    from nnlab.job.body import train_and_log
    from nnlab.tracking import store, track
    from nnlab.training.checkpoints import claim

    track.install_signal_handlers()
    client = store.client(uri)
    uri = client.tracking_uri
    folder = resumable(store.get_run(client, run_id))
    yaml_text = store.run_config(client, run_id)  # written when the run started: the same under the claim
    run_plugins(list(OmegaConf.create(yaml_text).get("plugins") or []), plugins, trust_plugins, run_id)
    # The run is this process's from here until its end is recorded: a second resume refuses, naming it.
    with claim(folder, run_id, create=False):
        run, state, weights = find_checkpoint(client, run_id)  # again: an owner may have ended it meanwhile
        cfg = typed_config(yaml_text)
        experiment = client.get_experiment(run.info.experiment_id).name
        tracking = replace(cfg.tracking, uri=uri, experiment=experiment, run_name=run.info.run_name, resume=None)
        tags = {"nnlab.resumed_from_epoch": state["epoch"], FALLBACK_TAG: fallback_note(client, run_id, state),
                **(tags or {})}
        with track.start_run(tracking, tags, run_id=run_id) as logger:
            for step, metrics in missing_epochs(client, run_id, state).items():
                logger.metrics(metrics, step=step)
            task, metrics, stopped_by = train_and_log(
                cfg, yaml_text, logger, resume={**state, "weights": str(weights), "folder": folder})
    print(f"\nnnlab: run {run_id} resumed from epoch {state['epoch']} and FINISHED ({stopped_by}): "
          f"{ {k: round(v, 4) for k, v in metrics.items() if k in ('test_loss', task.headline)} }\n  store: {redact(uri)}")
    return task.objective_value(metrics)


def main(argv: list[str]) -> None:
    """`nnlab resume RUN_ID [--uri URI] [--plugins P ...] [--trust-plugins]`."""
    import argparse

    from nnlab.imports import add_plugin_options

    parser = argparse.ArgumentParser(prog="nnlab resume", description="Continue an interrupted run (killed, "
                                     "Ctrl-C, SIGTERM, a crash) from its last checkpoint, in the same MLflow run.")
    parser.add_argument("run_id", help="the run's id (mlflow ui, or `nnlab runs --stale`)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    add_plugin_options(parser)
    args = parser.parse_args(argv)
    resume(args.run_id, args.uri, args.plugins, args.trust_plugins)
