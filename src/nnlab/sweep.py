"""Multirun sweeps in MLflow: a Hydra callback that makes one parent run per sweep, and the job-side lookup.

The callback runs in the launching process before any job starts: it creates the store and the experiment
once (six jobs creating a fresh SQLite store at the same time race on its tables and most of them fail), opens
the parent run, and writes `nnlab_sweep.json` into the sweep folder. Every job, whatever launcher runs it
(in-process, joblib workers, SLURM nodes sharing the folder), reads that file and becomes a child run tagged
with the sweep id. When the sweep ends the parent gets its status, the comparison table and the figures.
"""

import atexit
import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nnlab.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG

log = logging.getLogger(__name__)

SWEEP_FILE = "nnlab_sweep.json"


@dataclass(frozen=True)
class SweepContext:
    """What a job needs to join its sweep: written by the callback, read by every job."""

    sweep_id: str
    uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    fixed_keys: tuple[str, ...] = ()  # keys the command line sets to one value for every job

    def job_name(self, overrides: list[str]) -> str:
        """A job's run name: the overrides that tell it apart from the other jobs of the sweep."""
        own = [o for o in overrides if override_key(o) not in self.fixed_keys and not o.startswith("hydra.")]
        return " ".join(own)[:250]

    def child_tags(self) -> dict[str, str]:
        return {PARENT_TAG: self.parent_run_id, SWEEP_TAG: self.sweep_id, ROLE_TAG: "job"}


def new_sweep_id(name: str | None) -> str:
    return f"{name or 'sweep'}-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_sweep_override(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def sweep_space(cfg: DictConfig) -> str:
    """The swept dimensions as the user wrote them: command-line sweep overrides and hydra.sweeper.params."""
    parts = [o for o in OmegaConf.to_container(cfg.hydra.overrides.task) if is_sweep_override(o)]
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    parts += [f"{key}={value}" for key, value in params.items()]
    return " ".join(parts) or "(none)"


class MlflowSweepCallback(Callback):
    """Parent run for a multirun: created in `on_multirun_start`, closed in `on_multirun_end` (or at exit)."""

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self.context: SweepContext | None = None
        self.client = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from nnlab import track

        tracking = config.tracking
        uri = track.resolve_uri(tracking.uri)
        self.client = MlflowClient(uri)
        location = tracking.artifact_location or track.default_artifact_location(uri)
        experiment_id = track.ensure_experiment(self.client, tracking.experiment, location)
        sweep_id = new_sweep_id(OmegaConf.select(config, "sweep_name"))
        tags = {SWEEP_TAG: sweep_id, ROLE_TAG: "sweep", "sweep.space": sweep_space(config),
                "sweeper": config.hydra.sweeper._target_, "launcher": config.hydra.launcher._target_,
                "hydra.sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
                "mlflow.source.git.commit": track.git_commit()}
        run = self.client.create_run(experiment_id, run_name=sweep_id,
                                     tags={k: str(v) for k, v in tags.items() if v is not None})
        fixed = tuple(override_key(o) for o in OmegaConf.to_container(config.hydra.overrides.task)
                      if not is_sweep_override(o))
        self.context = SweepContext(sweep_id, uri, tracking.experiment, experiment_id, run.info.run_id, fixed)
        write_context(Path(config.hydra.sweep.dir), self.context)
        atexit.register(self.close, "FAILED", "the sweep stopped before all jobs returned")
        print(f"nnlab: sweep {sweep_id}: parent run {run.info.run_id} in experiment '{tracking.experiment}'")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.context is None:
            return
        children = self.client.search_runs(
            [self.context.experiment_id], f"tags.`{PARENT_TAG}` = '{self.context.parent_run_id}'", max_results=5000)
        bad = [r for r in children if r.info.status != "FINISHED"]
        if self.report and children:
            self.log_report()
        status = "FAILED" if bad or not children else "FINISHED"
        why = f"{len(bad)} of {len(children)} jobs did not finish" if bad or not children else None
        self.close(status, why)
        print(f"nnlab: sweep {self.context.sweep_id} {status}: {len(children)} jobs; "
              f"table: nnlab report --parent {self.context.parent_run_id}")

    def log_report(self) -> None:
        from nnlab import report

        try:
            report.build(self.client, parent=self.context.parent_run_id, log_to_parent=True)
        except Exception as err:  # noqa: BLE001  (a failed summary must not cost the sweep its status)
            log.warning("sweep report failed: %s", err)
            self.client.set_tag(self.context.parent_run_id, "report_error", f"{type(err).__name__}: {err}"[:5000])

    def close(self, status: str, why: str | None = None) -> None:
        """End the parent run once; later calls (the exit hook after a clean end) do nothing."""
        if self.context is None or self.client is None:
            return
        run = self.client.get_run(self.context.parent_run_id)
        if run.info.status == "RUNNING":
            if why:
                self.client.set_tag(self.context.parent_run_id, "error" if status != "FINISHED" else "note", why)
            self.client.set_terminated(self.context.parent_run_id, status)


def write_context(sweep_dir: Path, context: SweepContext) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    partial = sweep_dir / f".{SWEEP_FILE}.partial"
    partial.write_text(json.dumps(asdict(context), indent=2))
    os.replace(partial, sweep_dir / SWEEP_FILE)


def job_context() -> SweepContext | None:
    """The sweep this job belongs to, or None for a single run (or a multirun without the callback)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(hc.sweep.dir) / SWEEP_FILE
    if not path.is_file():
        return None
    fields = json.loads(path.read_text())
    return SweepContext(**fields | {"fixed_keys": tuple(fields.get("fixed_keys", ()))})
