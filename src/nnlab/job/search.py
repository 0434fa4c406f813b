"""An Optuna search, job side: the study's storage, which trial a job is, and its pruning callback.

nnlab's sweeper (src/hydra_plugins/nnlab_optuna_sweeper) asks the study for trials and launches one job per trial
with any launcher. Before launching it writes `optuna_trials/<job number>.json` into the sweep folder (storage,
study, trial); a job finds its file as it finds `nnlab_sweep.json`, loads the study from the same storage (an
SQLite or PostgreSQL URL, or a journal file in the sweep folder: never memory, so jobs in other processes reach
it) and reports its validation monitor after every epoch. When the pruner says stop, training stops, the run
is evaluated and logged as any run (FINISHED, tagged `pruned`), and the trial is told PRUNED.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlab.reports.search import STATE_TAG, STORAGE_TAG, STUDY_TAG, TRIAL_TAG

log = logging.getLogger(__name__)

TRIAL_DIR = "optuna_trials"
JOURNAL = "optuna.journal"  # the study's storage when the sweeper's `storage` is null: a file in the sweep folder
PRUNED_ATTR = "nnlab.pruned_after_epoch"  # the job tells the sweeper, through the study, that it was pruned
# A pruner's name: Optuna's class and the arguments it has no default for (percentile: keep the top quarter).
PRUNERS = {"median": ("MedianPruner", {}), "hyperband": ("HyperbandPruner", {}),
           "percentile": ("PercentilePruner", {"percentile": 25.0}),
           "successive_halving": ("SuccessiveHalvingPruner", {})}


def storage_spec(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage as jobs reach it: the configured URL, else a journal file in the sweep folder."""
    return storage or f"journal:{Path(sweep_dir).resolve() / JOURNAL}"


def open_storage(spec: str):
    """An Optuna storage from `storage_spec`'s string (an RDB URL, or `journal:PATH`)."""
    import optuna

    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(spec.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(spec)


def study_tags(sweeper, sweep_dir: str | Path) -> dict[str, str]:
    """The parent run's tags naming the study of nnlab's Optuna sweeper (its name, its storage without any
    password); {} for another sweeper."""
    from nnlab.tracking.accounts import redact

    if "nnlab_optuna_sweeper" not in str(sweeper.get("_target_", "")):
        return {}
    spec = storage_spec(sweeper.get("storage"), sweep_dir)
    return {STUDY_TAG: sweeper.get("study_name") or "nnlab", STORAGE_TAG: redact(spec)}


def make_pruner(pruner: Any):
    """A pruner by name (median, hyperband, ...; none or null: no pruning), or Optuna's class with its
    arguments ({_target_: optuna.pruners.MedianPruner, n_warmup_steps: 2})."""
    import optuna

    if pruner is None or isinstance(pruner, str) and pruner.lower() in ("none", "null", ""):
        return optuna.pruners.NopPruner()
    if not isinstance(pruner, str):
        from hydra.utils import instantiate

        return instantiate(pruner)
    if pruner.lower() not in PRUNERS:
        from nnlab.errors import NnlabError, unknown_name

        raise NnlabError(unknown_name("hydra.sweeper.pruner", pruner, PRUNERS)
                         + " (or Optuna's class with its arguments in YAML: {_target_: optuna.pruners...}).")
    name, arguments = PRUNERS[pruner.lower()]
    return getattr(optuna.pruners, name)(**arguments)


def study_parent(client, experiment_id: str, study: dict[str, str], kill_lost):
    """The parent run of an earlier sweep of this study (same name, same storage), RUNNING again and marked
    with this process; its children whose process is gone are first marked KILLED (`kill_lost`). None if the
    study has no parent yet."""
    from nnlab.tracking.track import ROLE_TAG, process_tags

    query = (f"tags.`{ROLE_TAG}` = 'sweep' and tags.`{STUDY_TAG}` = '{study[STUDY_TAG]}' and "
             f"tags.`{STORAGE_TAG}` = '{study[STORAGE_TAG]}'")
    found = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=1)
    if not found:
        return None
    run_id = found[0].info.run_id
    kill_lost(client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=5000))
    if found[0].info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
        if "error" in found[0].data.tags:
            client.delete_tag(run_id, "error")
    for key, value in process_tags().items():  # this process's, for `nnlab runs --stale`
        client.set_tag(run_id, key, value)
    return client.get_run(run_id)


def log_study_figures(client, parent_run_id: str, study: dict[str, str], spec: str) -> None:
    """Optuna's optimization history and parameter importances, under the parent's `optuna/`."""
    import tempfile

    import optuna

    from nnlab.reports.search import study_figures

    try:
        loaded = optuna.load_study(study_name=study[STUDY_TAG], storage=open_storage(spec))
        with tempfile.TemporaryDirectory() as folder:
            for path in study_figures(loaded, Path(folder)):
                client.log_artifact(parent_run_id, str(path), "optuna")
    except Exception as err:  # noqa: BLE001  (figures must not cost the sweep its status)
        log.warning("the study's figures failed: %s", err)


def write_trial(sweep_dir: str | Path, job_num: int, spec: str, study: str, trial_id: int, number: int,
                pruner: Any = None) -> None:
    folder = Path(sweep_dir) / TRIAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{job_num}.json.partial"
    partial.write_text(json.dumps({"storage": spec, "study": study, "trial_id": trial_id, "number": number,
                                   "pruner": pruner}))
    os.replace(partial, folder / f"{job_num}.json")


@dataclass
class TrialJob:
    """This job's trial: reports each epoch's monitor and stops training when the pruner says so."""

    trial: Any  # optuna.trial.Trial
    number: int
    callback: Any = None

    def callbacks(self, task) -> list:
        self.callback = pruning_callback(self.trial, task.objective[0].removeprefix("best_"))
        return [self.callback]

    def start_tags(self) -> dict[str, Any]:
        # FAIL until the job says otherwise: a run killed mid-trial keeps it, as the study does.
        return {TRIAL_TAG: self.number, STATE_TAG: "FAIL"}

    def end(self, run) -> None:
        """The run's tags and the trial's mark: PRUNED (after which epoch) or COMPLETE."""
        after = getattr(self.callback, "pruned_after", None)
        if after is None:
            run.tags({STATE_TAG: "COMPLETE"})
            return
        self.trial.set_user_attr(PRUNED_ATTR, after)
        run.tags({STATE_TAG: "PRUNED", "pruned": f"after epoch {after}: {self.callback.reason}"})


def job_trial() -> TrialJob | None:
    """This job's trial when nnlab's Optuna sweeper launched it, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hc = HydraConfig.get()
    path = Path(hc.runtime.cwd) / hc.sweep.dir / TRIAL_DIR / f"{hc.job.num}.json"
    if not path.is_file():
        return None
    import optuna

    info = json.loads(path.read_text())
    study = optuna.load_study(study_name=info["study"], storage=open_storage(info["storage"]),
                              pruner=make_pruner(info.get("pruner")))  # storage keeps no pruner
    return TrialJob(optuna.trial.Trial(study, info["trial_id"]), info["number"])


def pruning_callback(trial, monitor: str):
    """optuna-integration's Keras callback reports `monitor` after each epoch; where it would raise TrialPruned
    (Keras would end the job with an error), training stops instead, so the trial's epochs are evaluated and
    logged like any run's."""
    import optuna
    from optuna_integration import KerasPruningCallback

    class StopWhenPruned(KerasPruningCallback):
        pruned_after: int | None = None
        reason = ""
        stopped_by = None  # read by nnlab.training.train.fit: why training ended before its epochs

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            try:
                super().on_epoch_end(epoch, logs)
            except optuna.TrialPruned:
                self.pruned_after, self.stopped_by = epoch + 1, "pruned"
                self.reason = f"{monitor} {float((logs or {})[monitor]):.4g} behind the other trials (the pruner)"
                self.model.stop_training = True

    return StopWhenPruned(trial, monitor)
