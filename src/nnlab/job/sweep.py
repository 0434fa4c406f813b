"""Multirun sweeps in MLflow: a Hydra callback that makes one parent run per sweep, and the job-side lookup.

The callback runs in the launching process before any job starts: it creates the store and the experiment
once, up front (through `track.open_store`, under the same file lock every job takes: processes creating a fresh
SQLite store at the same time race on its tables), opens the parent run, and writes `nnlab_sweep.json` into the
sweep folder. Every job, whatever launcher runs it (in-process, joblib workers, SLURM nodes sharing the
folder), reads that file and becomes a child run tagged with the sweep id. When the sweep ends the parent gets
its status, the comparison table and the figures, and the best job (its headline metric, run id and swept values,
and a description: nnlab.reports.best).

A launching process that is killed outright cannot close its parent run: `nnlab runs --stale --kill` does
(the parent records its host and pid like every run), once none of its jobs still runs.
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

from nnlab.job import search
from nnlab.job.cores import parallel_jobs
from nnlab.tracking.track import KILLED_REASON_TAG, PARENT_TAG, ROLE_TAG, SWEEP_TAG

log = logging.getLogger(__name__)

SWEEP_FILE = "nnlab_sweep.json"
JOB_TAG = "nnlab.sweep_job"  # the job's number in the sweep: a job started again (requeued) is still one job
failed: list[str] = []  # sentences of the sweeps this process ran whose parent ended FAILED (the CLI's exit code)


@dataclass(frozen=True)
class SweepContext:
    """What a job needs to join its sweep: written by the callback, read by every job."""

    sweep_id: str
    uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    fixed_keys: tuple[str, ...] = ()  # keys the command line sets to one value for every job
    parallel: int | None = None  # at most this many jobs run at once (None: not known)

    def job_name(self, overrides: list[str]) -> str:
        """A job's run name: the overrides that tell it apart from the other jobs of the sweep."""
        own = [o for o in overrides if override_key(o) not in self.fixed_keys]
        return " ".join(own)[:250]

    def child_tags(self, job_num: int | None = None) -> dict[str, str]:
        tags = {PARENT_TAG: self.parent_run_id, SWEEP_TAG: self.sweep_id, ROLE_TAG: "job"}
        return tags if job_num is None else tags | {JOB_TAG: str(job_num)}


def new_sweep_id(name: str | None) -> str:
    return f"{name or 'sweep'}-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_sweep_override(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def sweep_space(cfg: DictConfig) -> tuple[list[str], tuple[str, ...]]:
    """(the swept dimensions as they will run, the keys fixed for every job). The command line wins over a
    preset's hydra.sweeper.params key by key, as Hydra's sweepers merge them."""
    space = {str(k): f"{k}={v}" for k, v in (OmegaConf.select(cfg, "hydra.sweeper.params") or {}).items()}
    fixed = []
    for override in OmegaConf.to_container(cfg.hydra.overrides.task):
        key = override_key(override)
        if is_sweep_override(override):
            space[key] = override
        else:
            space.pop(key, None)
            fixed.append(key)
    return list(space.values()), tuple(fixed)


class MlflowSweepCallback(Callback):
    """Parent run for a multirun: created in `on_multirun_start`, closed in `on_multirun_end`, or by an exit
    hook when the sweep stops early (Hydra skips `on_multirun_end` when a job raises)."""

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self.context: SweepContext | None = None
        self.client = None
        self.study: dict[str, str] = {}  # the parent's study tags (nnlab's Optuna sweeper): shared by processes
        self.study_spec = ""  # that study's storage, as search.open_storage takes it

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nnlab.tracking import track

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        (sweep_dir / SWEEP_FILE).unlink(missing_ok=True)  # a reused folder must not lead jobs to an old parent
        tracking = config.tracking
        uri, self.client, experiment_id = track.open_store(tracking.uri, tracking.experiment,
                                                           tracking.artifact_location)
        warn_stale(self.client, experiment_id, tracking.experiment)
        sweep_id = new_sweep_id(OmegaConf.select(config, "sweep_name"))
        space, fixed = sweep_space(config)
        study = search.study_tags(config.hydra.sweeper, sweep_dir)  # {} unless nnlab's Optuna sweeper
        tags = {SWEEP_TAG: sweep_id, ROLE_TAG: "sweep", "sweep.space": " ".join(space) or "(none)",
                "sweeper": config.hydra.sweeper._target_,
                "launcher": config.hydra.launcher._target_, "hydra.sweep_dir": str(sweep_dir),
                "mlflow.source.git.commit": track.git_commit(), **dict(tracking.tags or {}), **track.process_tags(),
                **study}
        self.study = study
        self.study_spec = search.storage_spec(OmegaConf.select(config, "hydra.sweeper.storage"), sweep_dir)
        run = self.study_parent(experiment_id, study) if study else None  # a continued study keeps its parent
        if run is None:
            run = self.client.create_run(experiment_id, run_name=sweep_id,
                                         tags={k: str(v) for k, v in tags.items() if v is not None})
        self.context = SweepContext(sweep_id, uri, tracking.experiment, experiment_id, run.info.run_id, fixed,
                                    parallel_jobs(config, space))
        atexit.register(self.stopped_early)
        try:
            write_context(sweep_dir, self.context)
        except OSError as err:  # Hydra only warns about a failing callback: end the parent here, then complain
            self.close("FAILED", f"cannot write {sweep_dir / SWEEP_FILE}: {err}")
            raise
        print(f"nnlab: sweep {sweep_id}: parent run {run.info.run_id} in experiment '{tracking.experiment}'")

    def study_parent(self, experiment_id: str, study: dict[str, str]):
        """The parent run of an earlier sweep of the same study, reopened (its lost trials' runs KILLED first);
        None if the study has none yet."""
        run = search.study_parent(self.client, experiment_id, study, self.kill_lost)
        if run is not None:
            print(f"nnlab: study '{study[search.STUDY_TAG]}' continues under its parent run {run.info.run_id}")
        return run

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.context is None:
            return
        children = self.own_children()
        lost = [r.info.run_id for r in children if r.info.status == "RUNNING"]
        for run_id in lost:  # the launcher has returned, so a child still RUNNING lost its process
            self.client.set_tag(run_id, KILLED_REASON_TAG, "the launcher returned while the job's run was RUNNING")
            self.client.set_terminated(run_id, "KILLED")
        self.finish(self.children(), stopped=False)

    def stopped_early(self) -> None:
        """Exit hook: the sweep ended without `on_multirun_end` (a job raised, Ctrl-C). Children still RUNNING
        whose process is gone from this host are marked KILLED; the others are left alone: on a cluster their
        jobs may outlive this process (`nnlab runs --stale --kill` closes them, and then this parent, later)."""
        if self.context is None or self.client is None:
            return
        try:
            self.kill_lost(self.own_children())
            self.finish(self.children(), stopped=True)
        except Exception as err:  # noqa: BLE001  (at exit: say it, do not bury the real error under a traceback)
            print(f"nnlab: could not close sweep {self.context.sweep_id}'s parent run: {err}")

    def kill_lost(self, children: list) -> int:
        """Mark KILLED the RUNNING children whose process is gone from this host; returns how many."""
        import socket
        import time

        from nnlab.tracking.runs import own_verdict

        host, now, killed = socket.gethostname(), time.time(), 0
        for child in children:
            why = own_verdict(child, host, now, None) if child.info.status == "RUNNING" else None
            if why:
                self.client.set_tag(child.info.run_id, KILLED_REASON_TAG, why)
                self.client.set_terminated(child.info.run_id, "KILLED")
                killed += 1
        return killed

    def children(self) -> list:
        return self.client.search_runs([self.context.experiment_id],
                                       f"tags.`{PARENT_TAG}` = '{self.context.parent_run_id}'", max_results=5000)

    def own_children(self) -> list:
        """This process's jobs: a study's parent may have other processes' (still running) as well."""
        children = self.children()
        return [r for r in children if r.data.tags.get(SWEEP_TAG) == self.context.sweep_id] if self.study else children

    def finish(self, children: list, stopped: bool) -> None:
        """Report (partial results too), then end the parent: FINISHED only if every job finished a run."""
        if self.closed():
            return
        children = latest_per_job(children)
        if self.study and any(r.info.status == "RUNNING" for r in children):  # a study's other processes' trials
            print(f"nnlab: sweep {self.context.sweep_id} done here; other processes' trials still run under parent "
                  f"{self.context.parent_run_id}, and the last of them closes it")
            atexit.unregister(self.stopped_early)
            return
        done = [r for r in children if r.info.status == "FINISHED"]
        best = self.log_report() if self.report and done else None
        if self.study and done:
            search.log_study_figures(self.client, self.context.parent_run_id, self.study, self.study_spec)
        why = None
        if stopped:
            why = f"the sweep stopped early: {len(done)} of {len(children)} started jobs finished"
        elif not children:
            why = "no job started a run"
        elif len(done) < len(children):
            if self.study and done:  # a search goes on past a failed trial (the study has it as FAIL)
                self.client.set_tag(self.context.parent_run_id, "failed_trials", len(children) - len(done))
            else:
                why = f"{len(children) - len(done)} of {len(children)} jobs did not finish"
        status = "FAILED" if why else "FINISHED"
        self.close(status, why)
        if why:
            failed.append(f"sweep {self.context.sweep_id} ended FAILED ({why})")
        print(f"nnlab: sweep {self.context.sweep_id} {status}{f' ({why})' if why else ''}; "
              f"{f'{best.sentence()}; ' if best else ''}table: nnlab report --parent {self.context.parent_run_id}")

    def log_report(self):
        """The report under the parent's `report/`, and the best job on the parent; returns that job (a
        nnlab.reports.best.Best) or None."""
        from nnlab.reports import report

        try:
            return report.build(self.client, parent=self.context.parent_run_id, log_to_parent=True).best
        except Exception as err:  # noqa: BLE001  (a failed summary must not cost the sweep its status)
            log.warning("sweep report failed: %s", err)
            self.client.set_tag(self.context.parent_run_id, "report_error", f"{type(err).__name__}: {err}"[:5000])
            return None

    def closed(self) -> bool:
        return self.client.get_run(self.context.parent_run_id).info.status != "RUNNING"

    def close(self, status: str, why: str | None = None) -> None:
        if why:
            self.client.set_tag(self.context.parent_run_id, "error", why)
        self.client.set_terminated(self.context.parent_run_id, status)
        atexit.unregister(self.stopped_early)


def latest_per_job(children: list) -> list:
    """One run per job of the sweep, its latest: a job that SLURM started again and that could not resume its
    run (no checkpoint yet) made a second one."""
    latest = {}
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        tags = run.data.tags  # a search's trial number is unique in its study, job numbers only in a process
        latest[tags.get(search.TRIAL_TAG) or f"{tags.get(SWEEP_TAG)}/{tags.get(JOB_TAG, run.info.run_id)}"] = run
    return list(latest.values())


def warn_stale(client, experiment_id: str, experiment: str) -> None:
    """Say so when earlier runs in the sweep's experiment were left RUNNING by processes that died."""
    import shlex

    from nnlab.tracking.runs import stale_runs

    try:
        stale = stale_runs(client, experiment_ids=[experiment_id])
    except Exception as err:  # noqa: BLE001  (a courtesy: never the reason a sweep does not start)
        log.debug("could not look for stale runs: %s", err)
        return
    if stale:
        print(f"nnlab: {len(stale)} earlier runs in experiment '{experiment}' were left RUNNING by processes that "
              f"died; `nnlab runs --stale --kill --experiment {shlex.quote(experiment)}` marks them KILLED.")


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
    # Relative to where the sweep was launched: a job may run elsewhere (hydra.job.chdir, Ray workers).
    path = Path(hc.runtime.cwd) / hc.sweep.dir / SWEEP_FILE
    if not path.is_file():
        if "mlflow_sweep" in (hc.callbacks or {}):
            log.warning("no %s in the sweep folder: this job logs a standalone run", path)
        return None
    fields = json.loads(path.read_text())
    return SweepContext(**fields | {"fixed_keys": tuple(fields.get("fixed_keys", ()))})
