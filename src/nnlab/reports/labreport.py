"""`nnlab report --lab NAME`: one lab's report, lab_NAME.md and lab_NAME.html, from the runs in an MLflow store.

The lab (nnlab/labs.yaml, via nnlab.reports.labindex) says which runs are its own (experiment, tags, the latest sweep of
a preset), which numbers to show and which figures. The table is report.py's (train/val at the best epoch, the
`gap_*` and `last_gap_*` overfitting columns, test metrics), written by report.py's writers, plus `test_gap_*`
(the tested model's training score minus its test score) and `bar` (PASS or FAIL per run against the lab's bar).
The runs' figures are downloaded next to the report and embedded; other artifacts are linked (runs:/ID/PATH).
The default folder, reports/lab_NAME, is relative to the working directory."""

import html
import math
import re
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nnlab.errors import NnlabError
from nnlab.reports import render, report
from nnlab.reports.labindex import Bar, Lab, get_lab
from nnlab.tasks import higher_is_better
from nnlab.tracking.accounts import experiments_named, redact
from nnlab.tracking.track import ROLE_TAG, SWEEP_TAG

IMAGES = (".png", ".jpg", ".jpeg", ".svg")


def lab_runs(client: MlflowClient, lab: Lab) -> list[Run]:
    """The lab's training runs: in its experiment, with its tags; for a sweep lab, the latest sweep's jobs."""
    found = experiments_named(client, lab.experiment)  # on a server: every account's that this reader may read
    if not found:
        return []
    clauses = [f"tags.`{k}` = '{v}'" for k, v in lab.tags.items()]
    if lab.sweep:
        clauses.append(f"params.`sweep_name` = '{lab.sweep}'")
    runs = client.search_runs([e.experiment_id for e in found], " and ".join(clauses), max_results=5000)
    runs = [r for r in runs if r.data.tags.get(ROLE_TAG) not in ("sweep", "evaluation")]
    if lab.sweep and runs:
        groups: dict[str | None, list[Run]] = {}
        for run in runs:
            groups.setdefault(run.data.tags.get(SWEEP_TAG), []).append(run)
        latest = max(groups, key=lambda s: (s is not None, max(r.info.start_time for r in groups[s])))
        runs = groups[latest]
    return runs


def verdict(bar: Bar, run: Run) -> str:
    m = run.data.metrics
    value, limit = m.get(bar.metric), bar.value if isinstance(bar.value, (int, float)) else m.get(bar.value)
    if value is None or limit is None:
        return "n/a"
    ok = value >= limit if bar.op == ">=" else value <= limit
    if bar.minutes is not None:
        seconds = m.get(bar.time_metric)
        ok = ok and seconds is not None and seconds <= 60 * bar.minutes
    return "PASS" if ok else "FAIL"


def test_gaps(run: Run, names: list[str]) -> dict[str, float]:
    """test_gap_<m>: the tested model's training score minus its test score, signed so that > 0 is worse on test.
    The tested model is the best epoch's where early stopping restored it, else the last epoch's."""
    m, p = run.data.metrics, run.data.params
    restored = p.get("trainer.early_stopping.patience") not in (None, "", "None", "null") and \
        p.get("trainer.early_stopping.restore_best_weights") != "False"
    out = {}
    for name in names:
        train = m.get(f"best_{name}") if restored else m.get(name)
        test = m.get(f"test_{name}")
        if train is not None and test is not None:
            out[f"test_gap_{name}"] = (1 if higher_is_better(name) else -1) * (train - test)
    return out


def lab_table(lab: Lab, runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame, list[str], str, list[Run]]:
    """(shown table, full table, swept params, headline metric, runs in the table's order)."""
    swept = report.swept_params(runs)
    pool = sorted({k for r in runs for k in [*r.data.metrics, *r.data.params]} - set(swept))
    extra = [k for k in pool if any(fnmatch(k, pattern) for pattern in lab.columns) and any(
        not (isinstance(v, float) and math.isnan(v)) for r in runs
        if (v := r.data.metrics.get(k, r.data.params.get(k))) is not None)]
    full, metric, run_ids = report.ranked_table(runs, swept, extra)
    by_id = {r.info.run_id: r for r in runs}
    ordered = [by_id[i] for i in run_ids]
    names = list(dict.fromkeys(t.epoch_metrics[1] for t in report.runs_tasks(runs) if len(t.epoch_metrics) > 1))
    gaps = pd.DataFrame([test_gaps(r, names) for r in ordered])
    full = pd.concat([full, gaps], axis=1)
    if lab.bar is not None:
        full["bar"] = [verdict(lab.bar, r) for r in ordered]
        if lab.bar.metric.startswith("test_") and lab.bar.metric in full:  # else the task's headline order
            order = full[lab.bar.metric].sort_values(ascending=lab.bar.op == "<=", kind="stable").index
            full, ordered = full.loc[order].reset_index(drop=True), [ordered[i] for i in order]
    chosen = [c for pattern in lab.columns for c in full.columns if fnmatch(c, pattern)]
    columns = list(dict.fromkeys(["run", *swept, *chosen, *(["bar"] if lab.bar else []), "status"]))
    return full[[c for c in columns if c in full]], full, swept, metric, ordered


def bar_sentence(bar: Bar, table: pd.DataFrame, ordered: list[Run]) -> str:
    finished = [i for i, r in enumerate(ordered) if r.info.status == "FINISHED"]
    passed = [i for i in finished if table["bar"].iloc[i] == "PASS"]
    best = ordered[passed[0] if passed else (finished or [0])[0]]
    value = best.data.metrics.get(bar.metric)
    seconds = best.data.metrics.get(bar.time_metric)
    shown = f"{bar.metric} {value:.4g}" if value is not None else f"no {bar.metric} logged"
    shown += f", {seconds / 60:.1f} min" if seconds is not None else ""
    word = "PASS" if passed else "FAIL"
    return (f"{bar.text()}: **{word}**, {len(passed)} of {len(finished)} finished runs meet it; "
            f"best run '{best.info.run_name or best.info.run_id}' ({shown}).")


def run_figures(client: MlflowClient, lab: Lab, runs: list[Run], out: Path) -> list[tuple]:
    """Blocks for each chosen run's figures: images downloaded under out/figures/<run>/, other files linked
    (images by their path relative to `out`: MLflow returns absolute paths, `out` may be relative)."""
    blocks: list[tuple] = []
    root = out.resolve()
    for run in runs if lab.figure_runs == "all" else runs[:1]:
        rid, label = run.info.run_id, run.info.run_name or run.info.run_id
        blocks.append(("h3", f"Run '{label}' ({rid})"))
        folder = out / "figures" / re.sub(r"[^\w.=-]+", "_", f"{label}-{rid[:8]}")
        missing = []
        for path in lab.figures:
            parent = str(Path(path).parent) if "/" in path else None
            if path not in {a.path for a in client.list_artifacts(rid, parent)}:
                missing.append(path)
            elif path.lower().endswith(IMAGES):
                folder.mkdir(parents=True, exist_ok=True)
                local = Path(client.download_artifacts(rid, path, str(folder)))
                blocks.append(("img", local.resolve().relative_to(root).as_posix(), path))
            else:
                blocks.append(("p", f"{path}: runs:/{rid}/{path}"))
        if missing:
            blocks.append(("p", f"Not logged by this run: {', '.join(missing)}."))
    return blocks


def render_md(blocks: list[tuple]) -> str:
    parts = []
    for tag, *rest in blocks:
        if tag == "img":
            parts.append(f"![{rest[1]}]({rest[0]})")
        elif tag == "table":
            parts.append(f"{rest[0]}\n\n{render.markdown(rest[1])}")
        elif tag == "li":
            parts.append("\n".join(f"- {item}" for item in rest[0]))
        else:
            parts.append({"h1": "# ", "h2": "## ", "h3": "### "}.get(tag, "") + rest[0])
    return "\n\n".join(parts) + "\n"


def bold(text: str) -> str:
    """Markdown's **bold** in HTML; a verdict (PASS, FAIL) also in its colour."""
    def tag(match: re.Match) -> str:
        word = match.group(1)
        colour = render.verdict_class(word)
        return f'<b class="{colour}">{word}</b>' if colour else f"<b>{word}</b>"

    return re.sub(r"\*\*(.+?)\*\*", tag, text)


def render_html(blocks: list[tuple]) -> str:
    esc, parts = html.escape, []
    for tag, *rest in blocks:
        if tag == "img":
            parts.append(f'<figure><img src="{esc(rest[0])}" alt="{esc(rest[1])}">'
                         f"<figcaption>{esc(rest[1])}</figcaption></figure>")
        elif tag == "table":
            parts.append(render.html_table(rest[1], rest[0]))
        elif tag == "li":
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in rest[0]) + "</ul>")
        else:
            parts.append(f"<{tag}>{bold(esc(rest[0]))}</{tag}>")
    return render.html_page(blocks[0][1], "\n".join(parts))


def build(client: MlflowClient, name: str, out: str | Path | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Write lab_NAME.md and lab_NAME.html (with table.md/.csv/.html and the figures) to `out`
    (default reports/lab_NAME); returns the shown table and the two reports' paths."""
    lab = get_lab(name)
    runs = lab_runs(client, lab)
    if not runs:
        raise NnlabError(f"No runs of lab '{lab.name}' in the store {redact(client.tracking_uri)} ({lab.runs_text()}); "
                         f"run `{lab.commands[0]}` first (with the same --uri / tracking.uri).")
    folder = Path(out) if out is not None else Path("reports") / f"lab_{lab.name}"
    table, full, swept, metric, ordered = lab_table(lab, runs)
    caption = (f"Lab {lab.name}: {len(runs)} run{'s' if len(runs) > 1 else ''}; train/val at the best epoch by the "
               "validation monitor; gap_* validation worse than training there, last_gap_* at the last epoch, "
               "test_gap_* training minus test for the tested model.")
    report.write_tables(table, folder, ["md", "csv", "html"], caption, f"Lab {lab.name}: runs")
    comparison = report.write_figures(client, ordered, full, swept, metric, folder) if len(runs) > 1 else []
    blocks: list[tuple] = [
        ("h1", f"Lab {lab.name}: {lab.title}"), ("p", f"{lab.source}: {lab.asks}"),
        ("li", [f"command: {c}" for c in lab.commands] + [f"measured here: {lab.measured()}",
                                                           (f"runs: {len(runs)} from {redact(client.tracking_uri)}, "
                                                            f"{lab.runs_text()}")]),
        ("h2", "The bar"),
        ("p", bar_sentence(lab.bar, table, ordered) if lab.bar else "No bar stated: the lab asks for the "
                                                                    "comparison in the table and figures."),
        ("h2", "Runs"), ("table", caption, table), ("h2", "Figures"),
        *[("img", p.name, p.name) for p in comparison], *run_figures(client, lab, ordered, folder)]
    paths = []
    for kind in ("md", "html"):
        path = folder / f"lab_{lab.name}.{kind}"
        path.write_text((render_md if kind == "md" else render_html)(blocks), encoding="utf-8")
        paths.append(path)
    return table, paths


def main(name: str, uri: str | None, out: str | None) -> None:
    from nnlab.tracking import store

    get_lab(name)  # an unknown name fails before the store is opened
    client = store.client(uri)
    table, paths = build(client, name, out)
    print(render.markdown(table, marks=False))
    print(f"\nnnlab: report of lab '{name}' ({len(table)} runs) written to {', '.join(str(p) for p in paths)}")
