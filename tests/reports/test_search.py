"""Reports of an Optuna search: the study's counts, best trial and figures (an in-memory study, no training)."""

import logging

import optuna
import pytest
from optuna.trial import TrialState

from nnlab.reports import search


@pytest.fixture
def study():
    """5 trials: 3 complete (lr and optimizer vary), 1 pruned with the highest value, 1 failed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lr-search", direction="maximize")
    for lr, opt, value, state in ((0.1, "sgd", 0.70, TrialState.COMPLETE), (0.01, "adam", 0.85, TrialState.COMPLETE),
                                  (0.05, "adam", 0.99, TrialState.PRUNED), (0.001, "sgd", None, TrialState.FAIL),
                                  (0.02, "adam", 0.80, TrialState.COMPLETE)):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.suggest_categorical("optimizer", ["sgd", "adam"])
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    return study


def test_summary_counts_trials_by_state_and_names_the_best_complete_trial(study):
    study.ask()  # one still running
    assert search.summary(study) == {"complete": 3, "pruned": 1, "failed": 1, "running": 1, "best_trial": 1,
                                     "best_value": pytest.approx(0.85), "best_params": study.trials[1].params}


def test_summary_of_a_study_without_a_complete_trial_has_no_best():
    study = optuna.create_study()
    study.tell(study.ask(), state=TrialState.PRUNED)
    assert search.summary(study) == {"complete": 0, "pruned": 1, "failed": 0, "running": 0, "best_trial": None,
                                     "best_value": None, "best_params": None}


def test_study_figures_are_written_as_pngs(study, tmp_path, recwarn):
    paths = search.study_figures(study, tmp_path / "figs")
    assert [p.name for p in paths] == ["optimization_history.png", "param_importances.png"]
    assert all(p.parent == tmp_path / "figs" and p.stat().st_size > 1000 for p in paths)
    assert not [w for w in recwarn if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]


def test_importances_are_skipped_with_a_reason_below_two_complete_trials_or_without_variance(tmp_path, caplog):
    one = optuna.create_study(study_name="one")
    trial = one.ask()
    trial.suggest_float("lr", 1e-4, 1.0)
    one.tell(trial, 0.5)
    with caplog.at_level(logging.WARNING, logger="nnlab.reports.search"):
        assert [p.name for p in search.study_figures(one, tmp_path)] == ["optimization_history.png"]
    assert "no param_importances.png for study 'one': parameter importances need at least 2" in caplog.text

    same = optuna.create_study(study_name="same")
    for value in (0.1, 0.2):
        trial = same.ask()
        trial.suggest_categorical("optimizer", ["adam"])
        same.tell(trial, value)
    with caplog.at_level(logging.WARNING, logger="nnlab.reports.search"):
        assert [p.name for p in search.study_figures(same, tmp_path / "same")] == ["optimization_history.png"]
    assert "no parameter varies" in caplog.text

    assert search.study_figures(optuna.create_study(), tmp_path / "empty") == []  # nothing completed: no figure
