"""The lab index: every assignment of the course (lessons, seminars, homework, the hot-dog assignment, the trainer's
five exercises) with the command that does it here and the result measured here. The data is package data,
`nnlab/labs.yaml`; `nnlab labs` prints it, `nnlab labs --markdown` writes docs/labs.md, and `nnlab report --lab NAME`
(nnlab/reports/labreport.py) reads a lab's runs, columns, figures and bar from it."""

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from nnlab.errors import ConfigError, unknown_name

NOT_MEASURED = "not measured yet"


@dataclass(frozen=True)
class Bar:
    """What a run must reach: `metric` `op` `value` (a number, or another metric of the same run, e.g. a naive
    baseline), within `minutes` of `time_metric` where set. `by`: course (the assignment's bar) or nnlab (a target)."""

    metric: str
    op: str  # ">=" or "<="
    value: float | str
    minutes: float | None = None
    time_metric: str = "training_seconds"
    by: str = "course"

    def text(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, (int, float)) else self.value
        within = f" within {self.minutes:g} min ({self.time_metric})" if self.minutes is not None else ""
        who = "the course's bar" if self.by == "course" else "nnlab's target"
        return f"{self.metric} {self.op} {value}{within} ({who})"


@dataclass(frozen=True)
class Lab:
    name: str
    title: str
    source: str  # lessons 1-3, lesson 4 ... seminar, homework, assignment, course trainer
    asks: str
    commands: tuple[str, ...]
    result: str  # measured here, or "not measured yet"
    experiment: str  # the MLflow experiment its runs log to
    tags: dict[str, str] = field(default_factory=dict)  # run tags that tell its runs from others in the experiment
    sweep: str | None = None  # a sweep preset: the report reads the latest such sweep
    presets: tuple[str, ...] = ()
    date: str | None = None
    data: str | None = None
    columns: tuple[str, ...] = ()  # the report's numbers (fnmatch patterns over the table's columns)
    figures: tuple[str, ...] = ()  # run artifacts shown in the report
    figure_runs: str = "best"  # best: the best run's figures; all: every run's
    bar: Bar | None = None
    measured_with: str | None = None  # the exact command line that measured `result`, where it differs
    report: str | None = None  # its `nnlab report --lab` committed under docs/ (a path from docs/)

    def measured(self) -> str:
        if self.result.startswith(NOT_MEASURED):
            return self.result
        return f"{self.result} ({self.date or 'date not recorded'}; {self.data or 'data not recorded'})"

    def runs_text(self) -> str:
        tags = ", ".join(f"{k}={v}" for k, v in self.tags.items())
        sweep = f", the latest sweep of preset {self.sweep}" if self.sweep else ""
        return f"experiment '{self.experiment}'" + (f", tags {tags}" if tags else "") + sweep


def flat(items) -> tuple:
    """A YAML list that used an alias of another list ([a, *accuracy]) holds it nested: flatten it."""
    out: list = []
    for item in items or ():
        out.extend(flat(item) if isinstance(item, list) else [item])
    return tuple(out)


def parse(name: str, entry: dict) -> Lab:
    known = {f.name for f in dataclasses.fields(Lab)} - {"name"}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(f"labs.yaml: lab '{name}' has unknown key(s) {', '.join(sorted(unknown))}")
    values = dict(entry)
    for key in ("commands", "presets", "columns", "figures"):
        values[key] = flat(values.get(key))
    for key in ("date", "data", "measured_with", "report"):
        values[key] = None if values.get(key) is None else str(values[key])
    values["tags"] = {str(k): str(v) for k, v in (values.get("tags") or {}).items()}
    if values.get("bar") is not None:
        values["bar"] = Bar(**values["bar"])
        if values["bar"].op not in (">=", "<="):
            raise ValueError(f"labs.yaml: lab '{name}': bar op must be >= or <=")
    if values.get("figure_runs", "best") not in ("best", "all"):
        raise ValueError(f"labs.yaml: lab '{name}': figure_runs must be best or all")
    return Lab(name=name, **values)


@cache
def labs() -> dict[str, Lab]:
    """Every lab of labs.yaml, in its order."""
    text = (resources.files("nnlab") / "labs.yaml").read_text(encoding="utf-8")
    return {name: parse(name, entry) for name, entry in yaml.safe_load(text)["labs"].items()}


def get_lab(name: str) -> Lab:
    if name not in labs():
        raise ConfigError(unknown_name("lab", name, labs()) + " (`nnlab labs` lists them).")
    return labs()[name]


def index_text() -> str:
    """`nnlab labs`: each lab's name, source, title, command and result."""
    width = max(map(len, labs())) + 2
    lines = ["The course's labs (`nnlab labs NAME` shows one; `nnlab report --lab NAME` writes its report):", ""]
    for lab in labs().values():
        more = f"  (+{len(lab.commands) - 1} more)" if lab.commands[1:] else ""
        lines += [f"{lab.name:<{width}}{lab.title}  [{lab.source}]", f"{'':<{width}}$ {lab.commands[0]}{more}",
                  f"{'':<{width}}{lab.measured()}"]
    return "\n".join(lines)


def detail_text(lab: Lab) -> str:
    """`nnlab labs NAME`: everything the index knows of one lab."""
    rows = [("lab", f"{lab.name}: {lab.title}"), ("source", lab.source), ("asks", lab.asks),
            *((("commands" if i == 0 else ""), c) for i, c in enumerate(lab.commands)),
            ("bar", lab.bar.text() if lab.bar else "none stated: the lab asks for the comparison"),
            ("measured", lab.result), ("with", lab.measured_with or "-"), ("date", lab.date or "-"),
            ("data", lab.data or "-"), ("report of", f"docs/{lab.report}" if lab.report else "-"),
            ("runs", lab.runs_text()), ("report", f"nnlab report --lab {lab.name} [--uri STORE] [--out DIR]")]
    return "\n".join(f"{key:<10}{value}" for key, value in rows)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def markdown() -> str:
    """docs/labs.md."""
    lines = ["# Lab index", "",
             "Every assignment of the course, the command that does it with nnlab, and the result measured here.",
             "Generated from `src/nnlab/labs.yaml` by `nnlab labs --markdown > docs/labs.md` (a test checks that",
             "this page is in sync). `nnlab labs NAME` shows one lab; `nnlab report --lab NAME [--uri STORE]` writes",
             "its report (`lab_NAME.md`, `lab_NAME.html`: the runs' table with train, validation and test scores and",
             "the overfitting gaps, the bar with PASS/FAIL, and the runs' figures) from the runs in an MLflow store.",
             "", "| lab | source | what it asks | command | bar | measured here | date | data |",
             "|---|---|---|---|---|---|---|---|"]
    for lab in labs().values():
        commands = "<br>".join(f"`{c}`" for c in lab.commands)
        bar = lab.bar.text() if lab.bar else "-"
        measured = cell(lab.result) + (f" (`{cell(lab.measured_with)}`)" if lab.measured_with else "") + (
            f" [report]({lab.report})" if lab.report else "")
        lines.append(f"| `{lab.name}` {cell(lab.title)} | {lab.source} | {cell(lab.asks)} | {cell(commands)} | "
                     f"{cell(bar)} | {measured} | {lab.date or '-'} | {cell(lab.data or '-')} |")
    lines += ["", ("Columns of a lab report: `train_*` and `val_*` at the best epoch by the validation monitor; "
                   "`gap_*` validation worse than training there, `last_gap_*` at the last epoch; `test_gap_*` the "
                   "tested model's training score minus its test score (worse on test by this much); `bar` PASS or "
                   "FAIL per run.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnlab labs", description="The course's labs: what each asks, the "
                                     "command that does it here, and the result measured here.")
    parser.add_argument("name", nargs="?", help="one lab, in detail")
    parser.add_argument("--markdown", action="store_true", help="the whole index as Markdown (docs/labs.md)")
    args = parser.parse_args(argv)
    if args.name:
        print(detail_text(get_lab(args.name)))
    elif args.markdown:
        sys.stdout.write(markdown())
    else:
        print(index_text())
