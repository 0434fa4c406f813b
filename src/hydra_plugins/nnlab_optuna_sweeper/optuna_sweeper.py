"""`hydra/sweeper=optuna`: an Optuna search on the current Optuna, with pruning and studies that last.

hydra-optuna-sweeper 1.3 pins optuna<3, whose SQLite storage fails under SQLAlchemy 2, and has no pruning; its
main-branch rewrite needs Hydra 1.4. This sweeper keeps its settings and its `params` syntax (choice, range,
interval, tag(log, ...), int) and asks the study for trials batch by batch (`n_jobs` at once, any launcher):
- the study always lives in a storage jobs can reach (nnlab.job.search): the configured URL, or a journal file
  in the sweep folder; with a URL, a rerun of the command continues the study up to `n_trials` in total, and
  processes running the same command at once share it (Optuna numbers trials in the storage: none twice);
- each job reports its validation monitor every epoch; `pruner` (median, percentile, hyperband, successive_halving,
  none, or Optuna's class in YAML) stops unpromising ones: the trial is told PRUNED, its run ends FINISHED
  tagged `pruned`;
- a trial whose job failed, or whose process died (a rerun finds it RUNNING with its owner gone), is FAIL;
- at the end: `optimization_results.yaml` in the sweep folder, as before, and Optuna's figures on the parent run.
"""

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nnlab_optuna_sweeper import config as _config  # noqa: F401  (registers hydra/sweeper=optuna)

log = logging.getLogger(__name__)

OWNER_ATTR = "nnlab.process"  # host:pid:start of the process that asked for the trial


def distribution(override: Override):
    """An Optuna distribution for a sweep override (choice, range, interval, with tags log / int), else None."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop, step): its last value is the high end (stop excluded)
        last = list(override.sweep_iterator())[-1]
        if all(isinstance(x, int) for x in (value.start, value.stop, value.step)):
            return IntDistribution(value.start, last, step=value.step)
        return FloatDistribution(value.start, last, step=value.step)
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep the Optuna sweeper knows (choice, range, interval).")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the swept parameters' distributions, the fixed overrides every job gets); later arguments win."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        found = distribution(override)
        (space if found is not None else fixed)[key] = found if found is not None else \
            override.get_value_element_as_str()
        (fixed if found is not None else space).pop(key, None)
    return space, fixed


def make_sampler(sampler: Any, space: dict[str, Any]):
    """The sampler group's node (a config: the sweeper is not instantiated recursively); the grid sampler's
    search space is the params' values."""
    if sampler is None:
        return None
    if str(sampler.get("_target_", "")).endswith("GridSampler"):
        grid = {k: list(d.choices) if hasattr(d, "choices") else grid_values(k, d) for k, d in space.items()}
        return instantiate(sampler, search_space=grid, _partial_=False)
    return instantiate(sampler)


def grid_values(key: str, d) -> list:
    if getattr(d, "step", None) is None:
        from nnlab.errors import NnlabError

        raise NnlabError(f"{key}: the grid sampler needs discrete values (choice or range), not an interval.")
    return [d.low + i * d.step for i in range(round((d.high - d.low) / d.step) + 1)]


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Any, study_name: str | None,
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Any) -> None:
        self.sampler, self.pruner, self.direction, self.storage = sampler, pruner, direction, storage
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, max(1, n_jobs)
        self.max_failure_rate, self.params = max_failure_rate, params
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from nnlab.job import search

        assert self.config is not None and self.launcher is not None
        space, fixed = search_space([f"{k}={v}" for k, v in (self.params or {}).items()] + list(arguments))
        sweep_dir = str(self.config.hydra.sweep.dir)
        spec = search.storage_spec(self.storage, sweep_dir)
        study = self.open_study(spec, space)
        fail_dead_trials(study)
        self.job_idx = len(study.trials)  # job folders go on numbering where a resumed study stopped
        asked = 0  # failed trials are asked again, but no process asks for more than n_trials
        while (to_go := min(self.n_trials - counted(study), self.n_trials - asked)) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
            asked += len(trials)
            trials = [t for t in trials if keep_or_drop(study, t, self.n_trials)]
            if not trials:
                break
            for i, trial in enumerate(trials):
                search.write_trial(sweep_dir, self.job_idx + i, spec, study.study_name, trial._trial_id, trial.number,
                                   self.pruner_spec())
            overrides = [tuple(f"{k}={v}" for k, v in (trial.params | fixed).items()) for trial in trials]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # an interrupted or failed launch: its trials are not left RUNNING
                fail_running(study, trials)
                raise
            self.job_idx += len(returns)
            self.tell(study, trials, returns)
        finish(study, sweep_dir)

    def pruner_spec(self) -> Any:
        """The pruner as plain data: jobs rebuild it (a study loaded from storage has the default pruner)."""
        pruner = self.pruner
        return OmegaConf.to_container(pruner, resolve=True) if isinstance(pruner, DictConfig) else pruner

    def open_study(self, spec: str, space: dict[str, Any]):
        import optuna

        from nnlab.job import search

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the line below says what its INFO lines would
        directions = list(self.direction) if isinstance(self.direction, Sequence) and not isinstance(
            self.direction, str) else [self.direction]
        study = optuna.create_study(study_name=self.study_name or "nnlab", storage=search.open_storage(spec),
                                    sampler=make_sampler(self.sampler, space),
                                    pruner=search.make_pruner(self.pruner_spec()),
                                    directions=[str(d) for d in directions], load_if_exists=True)
        done = counted(study)
        log.info(f"Optuna study '{study.study_name}' in {redacted(spec)}: {done} of {self.n_trials} trials done"
                 f"{' (continued)' if done else ''}; pruner {type(study.pruner).__name__}")
        return study

    def tell(self, study, trials: list, returns: list) -> None:
        """Each trial's state from its job: PRUNED (the job marked it), COMPLETE with its value, else FAIL; too
        many failures re-raise the first job's error."""
        from optuna.trial import TrialState

        from nnlab.job.search import PRUNED_ATTR

        failures = []
        for trial, ret in zip(trials, returns):
            try:
                value = ret.return_value  # raises the job's exception if it failed
                if study._storage.get_trial(trial._trial_id).user_attrs.get(PRUNED_ATTR) is not None:
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                values = [float(v) for v in value] if len(study.directions) > 1 else [float(value)]
                study.tell(trial, values=values)
            except Exception as err:  # noqa: BLE001  (the trial is FAIL; the rate decides whether the sweep stops)
                study.tell(trial, state=TrialState.FAIL)
                log.warning(f"trial {trial.number} failed: {err}")
                failures.append(ret)
        if failures and len(failures) / len(returns) > self.max_failure_rate:
            failures[0].return_value  # noqa: B018  (re-raises the job's own exception)


def counted(study) -> int:
    """Trials that count towards n_trials: done (complete, pruned) or running in a live process."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def owner() -> str:
    from nnlab.processes import process_start_time

    return f"{socket.gethostname()}:{os.getpid()}:{int(process_start_time(os.getpid()) or 0)}"


def keep_or_drop(study, trial, n_trials: int) -> bool:
    """Mark a fresh trial as this process's, or, where processes sharing the study asked for the last trials
    at once, give back one beyond n_trials (FAIL, marked `nnlab.surplus`: Optuna cannot delete a trial)."""
    from optuna.trial import TrialState

    ahead = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number
             and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
    if len(ahead) >= n_trials:
        trial.set_user_attr("nnlab.surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return False
    trial.set_user_attr(OWNER_ATTR, owner())
    return True


def fail_dead_trials(study) -> None:
    """Trials left RUNNING by a process of this host that is gone (killed) become FAIL."""
    from optuna.trial import TrialState

    from nnlab.processes import pid_alive, process_start_time

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, rest = str(trial.user_attrs.get(OWNER_ATTR, "")).partition(":")
        pid, _, started = rest.partition(":")
        if host != socket.gethostname() or not pid.isdigit():
            continue  # another machine's: it may live
        if not pid_alive(int(pid)) or str(int(process_start_time(int(pid)) or 0)) != started:
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} was left running by process {pid}, which is gone: marked failed")


def fail_running(study, trials: list) -> None:
    from optuna.trial import TrialState

    for trial in trials:
        if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            study.tell(trial, state=TrialState.FAIL)


def finish(study, sweep_dir: str) -> None:
    """optimization_results.yaml (hydra-optuna-sweeper's file) and the study's figures for the parent run."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("no trial completed: no best parameters")
        return
    if len(study.directions) == 1:
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
        log.info(f"Best trial {best.number}: {best.value} with {best.params}")
    else:
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
    OmegaConf.save(OmegaConf.create(results), Path(sweep_dir) / "optimization_results.yaml")


def redacted(spec: str) -> str:
    from nnlab.tracking.accounts import redact

    return redact(spec)
