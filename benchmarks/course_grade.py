"""A class of 12 generated submissions (tests/fixtures/course_class.py: good scripts and every kind of failure)
graded by `nnlab course grade` on the exercise-2 layout of the real Fashion-MNIST copy, one at a time and
`--jobs 2`: the wall time of each, and whether every row says what it must.

    NNLAB_DATA_DIR=../shared/datasets python benchmarks/course_grade.py [--limit 10000] [--epochs 5] [--jobs 1 2]

Prints one JSON line per grading; the data (a seeded draw of --limit training images, the 10,000 test images) and
the class are written to a temporary folder.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from course_class import write_class  # noqa: E402


def grade(folder: Path, data: Path, jobs: int, args) -> dict:
    out = folder / f"grades_{jobs}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnlab", "course", "grade", str(folder / "class"), str(data), "--lab",
                           "exer_2", "--jobs", str(jobs), "--epochs", str(args.epochs), "--wall-minutes",
                           str(args.wall_minutes), "--memory-gb", str(args.memory_gb), "--uri",
                           f"sqlite:///{folder / 'mlflow.db'}", "--out", str(out)],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    with open(out / "grade_exer_2.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return {"jobs": jobs, "wall_seconds": round(seconds, 1), "exit": done.returncode, "rows": rows,
            "summary": next((line for line in done.stdout.splitlines() if "passed" in line), "")}


def right(row: dict | None, want: tuple[str, str]) -> bool:
    """The row says what it must: an ERROR's reason, or (real data: a good script may miss the bar) PASS exactly
    when the score meets 87 %."""
    if row is None:
        return False
    verdict, reason = want
    if verdict == "ERROR":
        return row["verdict"] == "ERROR" and reason in row["reason"]
    return row["verdict"] == ("PASS" if float(row["score"]) >= 87 else "FAIL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10000, help="training images drawn from the copy")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--filters", type=int, default=32, help="the good scripts' convolution filters")
    parser.add_argument("--learning-rate", type=float, default=0.001, help="the good scripts' Adam rate")
    parser.add_argument("--wall-minutes", type=float, default=3)
    parser.add_argument("--memory-gb", type=float, default=2)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnlab-class-") as tmp:
        folder = Path(tmp)
        data = folder / "fashion"
        subprocess.run([sys.executable, "-m", "nnlab", "course", "prepare", "fashion_mnist", str(data), "--limit",
                        str(args.limit)], check=True, capture_output=True)
        expected = write_class(folder / "class", epochs=args.epochs, filters=args.filters,
                               learning_rate=args.learning_rate)
        for jobs in args.jobs:
            result = grade(folder, data, jobs, args)
            rows = result.pop("rows")
            wrong = {s: rows.get(s, {}).get("verdict") for s, want in expected.items() if not right(rows.get(s), want)}
            scores = {s: rows[s]["score"] for s in ("anna", "ben", "ivan") if s in rows}
            minutes = {s: row["minutes"] for s, row in rows.items()}
            print(json.dumps(result | {"rows": len(rows), "rows_wrong": wrong, "scores": scores, "minutes": minutes,
                                       "verdicts": {s: row["verdict"] for s, row in rows.items()},
                                       "limit": args.limit, "epochs": args.epochs,
                                       "wall_minutes": args.wall_minutes}), flush=True)


if __name__ == "__main__":
    main()
