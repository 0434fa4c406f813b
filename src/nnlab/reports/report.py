"""Lab-report tables from MLflow: one row per run of a sweep, a parent run or an experiment.

Columns are an Optuna search's `trial` and `state` (complete, pruned, failed: nnlab.reports.search), the
parameters that differ between the runs (what was swept), then train/validation metrics at the
best epoch (the early-stopping monitor's best, not the last epoch), the gap between them in the task's first
metric at that epoch and at the last (`gap_mae`, `last_gap_mae`…: validation worse than training by this much),
test metrics, parameter count and time. The
table is written as Markdown, CSV, LaTeX and HTML (nnlab.reports.render: counts as integers, one stylesheet), with
two figures: the headline metric against each swept parameter, and the validation curves overlaid. Logged to a
sweep's parent run, the report also gives the parent the best job (nnlab.reports.best): its headline metric, run
id and swept values, and a description.
"""

import html
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnlab import plots
from nnlab.errors import NnlabError, closest
from nnlab.reports import best as best_run
from nnlab.reports import render, search
from nnlab.tasks import TASKS, Task, get_task, higher_is_better
from nnlab.tracking.accounts import ACCOUNT_TAG, experiments_named
from nnlab.tracking.store import get_run
from nnlab.tracking.track import PARENT_TAG, ROLE_TAG, SWEEP_TAG

FORMATS = {"md": "table.md", "csv": "table.csv", "tex": "table.tex", "html": "table.html"}
# Params that differ between runs without being a choice of the experimenter.
NOT_SWEPT = ("tracking.", "hydra.", "data.", "data_root", "sweep_name")
FACTS = ("best_epoch", "epochs_run", "params", "training_seconds")
LATEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


@dataclass
class Report:
    title: str
    table: pd.DataFrame
    swept: list[str]
    metric: str
    paths: list[Path] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)  # the table's rows' runs, in the table's order
    best: best_run.Best | None = None  # the best run by the headline metric, whatever the table's sort


def select_runs(client: MlflowClient, experiment: str | None = None, sweep: str | None = None,
                parent: str | None = None) -> tuple[str, list[Run], Run | None]:
    """(title, job runs, parent run or None) for exactly one of experiment name, sweep id or parent run id."""
    if sum(x is not None for x in (experiment, sweep, parent)) != 1:
        raise NnlabError("Choose the runs with exactly one of --experiment NAME, --sweep ID or --parent RUN_ID.")
    if parent is not None:
        parent_run = get_run(client, parent)
        runs = client.search_runs([parent_run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'",
                                  max_results=5000)
        return parent_run.info.run_name or parent, runs, parent_run
    if sweep is not None:
        found = client.search_runs(all_experiment_ids(client), f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=5000)
        parents = [r for r in found if r.data.tags.get(ROLE_TAG) == "sweep"]
        runs = [r for r in found if r.data.tags.get(ROLE_TAG) != "sweep"]
        if not found:
            raise NnlabError(f"No runs carry sweep id '{sweep}' in this store; the sweep's parent run is named "
                             "after its id (see `mlflow ui` or the sweep's console output).")
        return sweep, runs, parents[0] if parents else None
    found = experiments_named(client, experiment)  # on a server: every account's that this reader may read
    if not found:
        names = [e.name for e in client.search_experiments()]
        hint = closest(experiment, names)
        raise NnlabError(f"No experiment '{experiment}' in this store: it has {', '.join(names) or 'none'}"
                         + (f"; did you mean '{hint}'?" if hint else "."))
    runs = client.search_runs([e.experiment_id for e in found], max_results=5000)
    # Training runs only: a sweep's parent and `nnlab evaluate`'s runs (a model scored elsewhere) are no rows.
    return experiment, [r for r in runs if r.data.tags.get(ROLE_TAG) not in ("sweep", "evaluation")], None


def all_experiment_ids(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def swept_params(runs: Sequence[Run]) -> list[str]:
    """Parameters whose values differ between the runs, in config order. Where a whole group was swept
    (optimizer=sgd,adam), its `name` stands for the keys only some of its presets have (momentum, beta_1...)."""
    keys = dict.fromkeys(k for r in runs for k in r.data.params if not k.startswith(NOT_SWEPT))
    swept = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    groups = {k.rsplit(".", 1)[0] for k in swept if k.endswith(".name")}
    return [k for k in swept if k.endswith(".name") or k.rsplit(".", 1)[0] not in groups
            or all(k in r.data.params for r in runs)]


def runs_tasks(runs: Sequence[Run]) -> list[Task]:
    """The tasks of the runs (their `task` tag); runs logged before tasks were tagged count as every task."""
    names = dict.fromkeys(r.data.tags.get("task") for r in runs)
    if None in names or any(n not in TASKS for n in names):
        names = dict.fromkeys(TASKS.names())
    return [get_task(n) for n in names]


def row(run: Run, swept: Sequence[str], extra: Sequence[str], tasks: Sequence[Task]) -> dict:
    m, p = run.data.metrics, run.data.params
    out: dict = {"run": run.info.run_name, "account": run.data.tags.get(ACCOUNT_TAG),
                 # an Optuna search's trials: number and state (complete, pruned, failed); no column elsewhere
                 "trial": search.trial_number(run), "state": search.trial_state(run),
                 **{k: p.get(k, "") for k in swept}}
    for name in dict.fromkeys(n for t in tasks for n in t.epoch_metrics):
        # best-epoch values where the run had a validation monitor, else the last epoch's
        out[f"train_{name}"] = m.get(f"best_{name}", m.get(name))
        out[f"val_{name}"] = m.get(f"best_val_{name}", m.get(f"val_{name}"))
    for name in dict.fromkeys(t.epoch_metrics[1] for t in tasks if len(t.epoch_metrics) > 1):
        # validation worse than training by this much (overfitting; > 0 for errors and scores alike), at the best
        # epoch and at the last: the model tested, where no early stopping restored the best
        sign = -1 if higher_is_better(name) else 1
        for column, train, val in ((f"gap_{name}", out[f"train_{name}"], out[f"val_{name}"]),
                                   (f"last_gap_{name}", m.get(name), m.get(f"val_{name}"))):
            if train is not None and val is not None:
                out[column] = sign * (val - train)
    out |= {k: m.get(k) for k in [*dict.fromkeys(c for t in tasks for c in t.test_columns), *FACTS]}
    out |= {k: m.get(k, p.get(k)) for k in extra if k not in out}  # any other logged metric or param by name
    out["status"] = run.info.status
    return out


def comparison_table(runs: Sequence[Run], swept: Sequence[str], columns: Sequence[str] = (),
                     sort: str | None = None, ascending: bool | None = None) -> tuple[pd.DataFrame, str]:
    """(table, headline metric): empty columns dropped, sorted by `sort` or else the headline metric, then cut
    to `columns` (the run's name always stays first)."""
    table, metric, _ = ranked_table(runs, swept, columns, sort, ascending)
    return table, metric


def ranked_table(runs: Sequence[Run], swept: Sequence[str], columns: Sequence[str] = (), sort: str | None = None,
                 ascending: bool | None = None) -> tuple[pd.DataFrame, str, list[str]]:
    """comparison_table, plus the run id of each row in the table's order."""
    tasks = runs_tasks(runs)
    # trials in trial order: the order of ties and of rows without a score (failed trials) after sorting
    runs = sorted(runs, key=lambda r: -1 if search.trial_number(r) is None else search.trial_number(r))
    table = pd.DataFrame([row(r, swept, [c for c in columns if c not in swept], tasks) for r in runs],
                         index=[r.info.run_id for r in runs])
    table = render.as_counts(table.dropna(axis=1, how="all"))  # params, epochs…: integers, not 825514.0
    metric = next((m for m in [*(t.headline for t in tasks), "test_loss"] if m in table), "run")
    unknown = [c for c in columns if c not in table]
    if unknown:
        raise NnlabError(f"Unknown column(s) {', '.join(unknown)}: the runs have {', '.join(table.columns)}.")
    key = sort or ("trial" if metric == "run" and "trial" in table else metric)  # no score: trial order
    if key not in table:
        hint = closest(key, list(table.columns))
        raise NnlabError(f"Cannot sort by '{key}': no such column" + (f"; did you mean '{hint}'?" if hint else "."))
    up = ascending if ascending is not None else not higher_is_better(key)
    table = table.sort_values(key, ascending=up, kind="stable")
    return table.reset_index(drop=True), metric, list(table.index)


def latex_escape(text: str) -> str:
    """pandas escapes cells and headers, not the caption; sweep ids and keys are full of underscores."""
    return re.sub(r"[\\_%&#${}~^]", lambda m: LATEX[m.group()], text)


def write_tables(table: pd.DataFrame, out: Path, formats: Sequence[str], caption: str,
                 title: str = "nnlab report") -> list[Path]:
    """table.md (the caption, then the table), table.csv (raw values), table.tex, table.html (a styled page:
    `title`, the caption, the table)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise NnlabError(f"Unknown report format(s) {', '.join(unknown)}: choose from {', '.join(FORMATS)}.")
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        "md": lambda: f"{caption}\n\n{render.markdown(table)}\n",
        "csv": lambda: table.to_csv(index=False),
        "tex": lambda: render.latex(table, latex_escape(caption)),
        "html": lambda: render.html_page(title, f"<h1>{html.escape(title)}</h1>\n{render.html_table(table, caption)}"),
    }
    paths = []
    for fmt in formats:
        path = out / FORMATS[fmt]
        path.write_text(writers[fmt]())
        paths.append(path)
    return paths


def write_figures(client: MlflowClient, runs: Sequence[Run], table: pd.DataFrame, swept: Sequence[str],
                  metric: str, out: Path) -> list[Path]:
    """metric_vs_params.png, and val_curves.png: validation loss (where overfitting shows) and the task's
    first metric (accuracy, MAE, mean IoU…) of every run, one line per run."""
    paths = []
    if swept and metric in table:
        paths.append(save(plots.metric_vs_params(table, list(swept), metric), out / "metric_vs_params.png"))
    names = [r.info.run_name or r.info.run_id for r in runs]
    labels = {r.info.run_id: n if names.count(n) == 1 else f"{n} ({r.info.run_id[:6]})" for r, n in zip(runs, names)}
    panels = {}
    for key in dict.fromkeys(["val_loss", *(f"val_{t.epoch_metrics[1]}" for t in runs_tasks(runs))]):
        curves = {labels[r.info.run_id]: [m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                                                   key=lambda m: m.step)] for r in runs}
        if any(curves.values()):
            panels[key] = {k: v for k, v in curves.items() if v}
    if panels:
        paths.append(save(plots.overlaid_curves(panels), out / "val_curves.png"))
    return paths


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plots.close(fig)
    return path


def build(client: MlflowClient, experiment: str | None = None, sweep: str | None = None,
          parent: str | None = None, out: str | Path | None = None, formats: Sequence[str] = tuple(FORMATS),
          columns: Sequence[str] = (), sort: str | None = None, ascending: bool | None = None,
          log_to_parent: bool = False) -> Report:
    """Select runs, build the table, write tables and figures to `out` (a temp folder when None), and log
    them under `report/` of the parent run when there is one and `log_to_parent` is set."""
    title, runs, parent_run = select_runs(client, experiment, sweep, parent)
    if not runs:
        raise NnlabError(f"'{title}' has no job runs yet; run the sweep first (nnlab sweep NAME).")
    swept = swept_params(runs)
    full, metric, run_ids = ranked_table(runs, swept, columns, sort, ascending)
    table = full[["run", *[c for c in columns if c != "run"]]] if columns else full
    best = best_run.best_of(runs, full, metric, run_ids, swept)
    report = Report(title, table, swept, metric, run_ids=run_ids, best=best)
    caption = (f"{title}: {len(runs)} runs; train/val metrics at the best epoch by the validation monitor; "
               f"swept: {', '.join(swept) or 'nothing differs'}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        report.paths = write_tables(table, folder, formats, caption, f"Report: {title}")
        report.paths += write_figures(client, runs, full, swept, metric, folder)
        if log_to_parent and parent_run is not None:
            for path in report.paths:
                client.log_artifact(parent_run.info.run_id, str(path), "report")
            if best is not None:
                best_run.log_to_parent(client, parent_run.info.run_id, best, full, swept)
        if out is None:
            report.paths = []
    return report
