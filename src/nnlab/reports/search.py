"""Reports of an Optuna search (a sweep by nnlab's Optuna sweeper): each job run is a trial, tagged with its
number and state; the parent run names the study and its storage. This module reads those tags, counts the
study's trials and draws Optuna's two figures a lab needs: how the objective improved trial after trial
(optimization history) and which hyperparameters mattered (parameter importances)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Run

from nnlab import plots  # matplotlib's Agg backend, before Optuna imports pyplot

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

TRIAL_TAG, STATE_TAG = "optuna.trial", "optuna.state"  # on each trial's run
STUDY_TAG, STORAGE_TAG = "optuna.study", "optuna.storage"  # on the search's parent run
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
          "WAITING": "running"}  # Optuna's TrialState names, as the report's `state` column words them
NOT_BEST = ("pruned", "failed")  # a pruned trial's score is of fewer epochs; Optuna's best is a complete trial


def trial_number(run: Run) -> int | None:
    tag = run.data.tags.get(TRIAL_TAG)
    return int(tag) if tag is not None and tag.isdigit() else None


def trial_state(run: Run) -> str | None:
    """complete, pruned, failed or running; from the run's status where the sweeper never tagged it (a trial
    killed with its process), None for a run that is no trial."""
    if trial_number(run) is None:
        return None
    tag = run.data.tags.get(STATE_TAG)
    if tag:
        return STATES.get(tag, tag.lower())
    status = run.info.status
    return "failed" if status in ("FAILED", "KILLED") else "running" if status in ("RUNNING", "SCHEDULED") else None


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def summary(study: optuna.Study) -> dict:
    """Trials by state (complete, pruned, failed, running), and the best trial's number, value and params (None
    where no trial completed, or the study has several objectives: then there is no single best)."""
    counts = dict.fromkeys(["complete", "pruned", "failed", "running"], 0)
    for trial in study.get_trials(deepcopy=False):
        counts[STATES[trial.state.name]] += 1
    best = study.best_trial if complete_trials(study) and len(study.directions) == 1 else None
    return {**counts, "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else None}


def study_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """optimization_history.png and param_importances.png in `folder`; a figure that cannot be drawn from the
    study is skipped with a logged reason. Returns the paths written."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as optuna_plots

    complete = complete_trials(study)
    keys = {k for t in complete for k in t.params}
    history, importances = None, None  # why not, when not
    if len(study.directions) > 1:
        history = importances = "the study has several objectives"
    elif not complete:
        history = importances = "no trial completed"
    elif len(complete) < 2:
        importances = "parameter importances need at least 2 complete trials"
    elif not any(len({repr(t.params.get(k)) for t in complete}) > 1 for k in keys):
        importances = "no parameter varies between the complete trials"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot, why in (("optimization_history", optuna_plots.plot_optimization_history, history),
                            ("param_importances", optuna_plots.plot_param_importances, importances)):
        if why is not None:
            log.warning("nnlab: no %s.png for study '%s': %s", name, study.study_name, why)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna's matplotlib plots are "experimental"
            try:
                fig = plot(study).figure
            except (ValueError, RuntimeError) as err:  # e.g. importances of a parameter with one value
                log.warning("nnlab: no %s.png for study '%s': %s", name, study.study_name, err)
                continue
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plots.close(fig)
        paths.append(path)
    return paths
