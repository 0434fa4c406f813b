"""Grade a course script on a machine without MLflow (the GPU machines: JAX and PyTorch only).

The same grading as `nnlab course run` (nnlab.course.grade: the platform's calls, the time budget, the test
score from the model's predictions, the PASS/FAIL verdict), with the epochs printed instead of tracked.

    KERAS_BACKEND=torch PYTHONPATH=src python benchmarks/course_on_gpu.py src/nnlab/course/exercises/exer_5.py DATA/
        [--lab exer_N] [--epochs N] [--max-minutes M]
"""

import argparse
from pathlib import Path

from nnlab.course import feeds, grade
from nnlab.course.labs import exercise_of


class Printed:
    """What run_script logs to an MLflow run, printed."""

    def params(self, values: dict) -> None:
        print("params:", values, flush=True)

    def metrics(self, values: dict, step: int | None = None) -> None:
        print(f"epoch {step}:", {k: round(float(v), 4) for k, v in values.items()}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--lab")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-minutes", type=float)
    args = parser.parse_args()
    exercise = exercise_of(args.script, args.lab)
    module = grade.load_script(args.script)
    grade.check_functions(module, args.script, exercise)
    model, test_data, seconds, log, cut = grade.run_script(module, args.script, exercise, args.data, args.epochs,
                                                           args.max_minutes, Printed())
    y, predictions = feeds.predict_all(model, test_data, f"the test data of {args.script.name}")
    score = feeds.score(exercise.metric, y, predictions)
    result = grade.Grade(exercise, score, seconds, log.epochs, cut, run_id="-", uri="-")
    print(f"RESULT {result.verdict()} ({len(y)} test examples)")


if __name__ == "__main__":
    main()
