"""The class table of `nnlab course grade`: grade_EXER.csv (raw values), .md and .html (nnlab's report style,
verdicts marked), a student a row in name order, and the summary line above it."""

import html
from dataclasses import asdict, dataclass
from pathlib import Path

from nnlab.course.isolate import Outcome
from nnlab.course.labs import Exercise


@dataclass
class Row:
    student: str
    verdict: str  # PASS, FAIL or ERROR
    score: float | None  # accuracy in percent, MAE in the target's units: as the bar is stated
    bar: str
    minutes: float | None  # the whole script, as the grader timed it
    epochs: int | None
    reason: str
    run_id: str | None
    grader_failed: bool = False  # the grader, not the submission, could not finish: `course grade` exits 1

    @classmethod
    def of(cls, student: str, outcome: Outcome, exercise: Exercise, run_id: str | None,
           grader_failed: bool = False) -> "Row":
        score = None if outcome.score is None else round(100 * outcome.score if exercise.metric == "accuracy"
                                                         else outcome.score, 2)
        minutes = None if outcome.seconds is None else round(outcome.seconds / 60, 2)
        return cls(student, outcome.verdict, score, exercise.bar_text(), minutes, outcome.epochs, outcome.reason,
                   run_id, grader_failed)

    def line(self) -> str:
        score = "" if self.score is None else f" {self.score:g}{'%' if '%' in self.bar else ''}"
        return f"{self.student}: {self.verdict}{score}{f' - {self.reason}' if self.reason else ''}"


COLUMNS = ["student", "verdict", "score", "bar", "minutes", "epochs", "reason", "run_id"]


def summary(rows: list[Row], exercise: Exercise) -> str:
    passed = sum(r.verdict == "PASS" for r in rows)
    errors = sum(r.verdict == "ERROR" for r in rows)
    return (f"{exercise.name} ({exercise.title}): passed {passed} of {len(rows)}"
            f"{f'; {errors} could not be scored' if errors else ''} (bar: {exercise.bar_text()})")


def write(rows: list[Row], exercise: Exercise, out: Path) -> list[Path]:
    """grade_<exercise>.csv, .md and .html in `out`; returns their paths."""
    import pandas as pd

    from nnlab.reports import render

    table = pd.DataFrame([asdict(r) for r in sorted(rows, key=lambda r: r.student.lower())], columns=COLUMNS)
    table["epochs"] = table["epochs"].astype("Int64")
    title, line = f"Class grades: {exercise.name}, {exercise.title}", summary(rows, exercise)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"grade_{exercise.name}.{ext}" for ext in ("csv", "md", "html")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(f"# {title}\n\n{line}\n\n{render.markdown(table)}\n")
    body = f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(line)}</p>\n{render.html_table(table)}"
    paths[2].write_text(render.html_page(title, body))
    return paths
