"""The best run of a sweep, as its parent run carries it in MLflow: the best job by the headline test metric
(whatever order the report's table was sorted in), logged to the parent as

- metric `best_<headline>` (e.g. `best_test_accuracy`, `best_test_mae`): the best job's value;
- params `best_run_id`, `best_run_name` and `best.<swept key>` (e.g. `best.optimizer.name`): which job it is;
- its description (`mlflow.note.content`): "best of 3: adam, test accuracy 77.7%", then the jobs ranked by that
  metric (run, swept values, the metric) as a Markdown table.

MLflow never changes a param once logged: when a later `nnlab report --log` finds another best job (a job resumed
or finished since), the metric and the description follow it and a warning says the params keep the first one.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnlab.reports import render
from nnlab.reports.search import NOT_BEST
from nnlab.tasks import TASKS, get_task, higher_is_better

log = logging.getLogger(__name__)

NOTE_ROWS = 10  # jobs listed in the parent's description


@dataclass(frozen=True)
class Best:
    run_id: str
    run_name: str
    metric: str  # the headline test metric the jobs were ranked by
    value: float
    values: dict[str, str]  # the best job's swept values
    scored: int  # jobs with a value of `metric`, but for those left out
    jobs: int  # jobs in the report
    words: str  # its headline in words: "test accuracy 77.7%"
    left_out: int = 0  # a search's pruned or failed trials: never its best, whatever their score

    def sentence(self) -> str:
        """The description's first line, e.g. "best of 3: adam, test accuracy 77.7%"."""
        if len(self.values) == 1:
            which = next(iter(self.values.values()))
        else:
            which = ", ".join(f"{k}={v}" for k, v in self.values.items()) or self.run_name
        others = ", ".join(f"{n} {why}" for n, why in ((self.jobs - self.scored - self.left_out,
                                                        f"without {self.metric}"),
                                                       (self.left_out, "pruned or failed")) if n)
        return f"best of {self.scored}{f' ({others})' if others else ''}: {which}, {self.words}"

    def params(self) -> dict[str, str]:
        return {"best_run_id": self.run_id, "best_run_name": self.run_name,
                **{f"best.{k}": v for k, v in self.values.items()}}


def best_of(runs: Sequence[Run], full: pd.DataFrame, metric: str, run_ids: Sequence[str],
            swept: Sequence[str]) -> Best | None:
    """The best row of `full` (a report's whole table, rows in `run_ids` order) by `metric`; None where no job
    has a value of it. A search's pruned trial (its score is of fewer epochs) or failed one is never the best, as
    Optuna's best trial is a complete one."""
    if metric not in full:
        return None
    left_out = full["state"].isin(NOT_BEST) if "state" in full else pd.Series(False, index=full.index)
    scores = pd.to_numeric(full[metric], errors="coerce").astype(float).mask(left_out)
    if not scores.notna().any():
        return None
    i = scores.idxmax() if higher_is_better(metric) else scores.idxmin()
    run = next(r for r in runs if r.info.run_id == run_ids[i])
    values = {k: str(full[k].iloc[i]) for k in swept if k in full and not render.missing(full[k].iloc[i])}
    return Best(run.info.run_id, run.info.run_name or run.info.run_id, metric, float(scores.iloc[i]), values,
                int(scores.notna().sum()), len(full), headline_words(run, metric, float(scores.iloc[i])),
                int(left_out.sum()))


def headline_words(run: Run, metric: str, value: float) -> str:
    """The metric in the words of the run's task (Task.describe), where the metric is a task's headline."""
    tag = run.data.tags.get("task")
    names = [tag] if tag in TASKS else TASKS.names()
    task = next((get_task(n) for n in names if get_task(n).headline == metric), None)
    if task is None:
        return f"{metric} {value:.4g}" if not math.isnan(value) else f"no {metric}"
    return task.describe({**run.data.metrics, metric: value})


def note(best: Best, full: pd.DataFrame, swept: Sequence[str]) -> str:
    """The parent's description: the sentence, then the jobs ranked by the headline metric."""
    ranked = full.sort_values(best.metric, ascending=not higher_is_better(best.metric), kind="stable")
    columns = list(dict.fromkeys(["run", *[k for k in ("state", *swept) if k in full], best.metric]))
    more = f"\n\n({len(ranked) - NOTE_ROWS} more in the table)" if len(ranked) > NOTE_ROWS else ""
    return (f"{best.sentence()}\n\n{render.markdown(ranked[columns].head(NOTE_ROWS))}{more}\n\n"
            "Every column: report/table.html (artifacts).")


def log_to_parent(client: MlflowClient, parent_run_id: str, best: Best, full: pd.DataFrame,
                  swept: Sequence[str]) -> None:
    """Metric, params and description of the parent run (see the module's docstring)."""
    from nnlab.tracking.track import MAX_PARAM_CHARS, RunLogger

    parent = RunLogger(client, parent_run_id)
    parent.metrics({f"best_{best.metric}": best.value})
    have = client.get_run(parent_run_id).data.params
    params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in best.params().items()}
    parent.params({k: v for k, v in params.items() if k not in have})
    kept = [k for k, v in params.items() if k in have and have[k] != v]
    if kept:
        log.warning("the sweep's parent run %s keeps its params %s from an earlier report (MLflow never changes a "
                    "param); its description and best_%s name the best job now, '%s'", parent_run_id,
                    ", ".join(kept), best.metric, best.run_name)
    parent.note(note(best, full, swept))
