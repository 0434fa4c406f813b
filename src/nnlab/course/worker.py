"""`python -m nnlab.course.worker REQUEST.json`: one submission graded in this process, for `nnlab course grade`
(`isolate.py` starts and watches it). The memory limit first, then the script, the platform's way (`grade.py`).
This process has no store and no credentials: the run's records go to the outbox in the request's folder, which
the grader sends; the verdict to verdict.json, written whole or not at all; what the script is doing to `stage`,
so that a process that dies can be told where."""

import functools
import json
import os
import resource
import sys
from dataclasses import asdict
from pathlib import Path

from nnlab.course.isolate import GB, Outcome, Request
from nnlab.errors import NnlabError


def limit_memory(gigabytes: float | None) -> None:
    """RLIMIT_DATA (heap and private mappings, which is what arrays and tensors take): an allocation past it raises
    MemoryError in the script, and the worker says so, where a watcher could only kill."""
    if gigabytes:
        size = int(gigabytes * GB)
        resource.setrlimit(resource.RLIMIT_DATA, (size, size))


class Stage:
    """What the script is doing, in a file the grader reads if this process dies."""

    def __init__(self, path: Path):
        self.path, self.now = path, "starting"

    def __call__(self, now: str) -> None:
        self.now = now
        self.path.write_text(now)

    def around(self, module, name: str, label: str) -> None:
        """Mark `label` while the script's function `name` runs (signature kept: the grader reads it)."""
        function = getattr(module, name, None)
        if not callable(function):
            return

        @functools.wraps(function)
        def marked(*args, **kwargs):
            self(label)
            return function(*args, **kwargs)

        setattr(module, name, marked)


def grade_here(request: Request, stage: Stage) -> Outcome:
    from nnlab.course.grade import SIGNATURES, check_functions, load_script, score_script
    from nnlab.course.labs import get_exercise
    from nnlab.imports import import_keras_quietly
    from nnlab.tracking.outbox import Outbox
    from nnlab.tracking.track import RunLogger

    exercise, script, path = get_exercise(request.lab), Path(request.script), Path(request.data_path)
    import_keras_quietly()
    stage(f"the import of {script.name}")
    module = load_script(script)
    check_functions(module, script, exercise)
    for name, label in SIGNATURES.items():
        stage.around(module, name, label)
    run = RunLogger(None, request.run_id, outbox=Outbox(request.path("outbox"), None, request.run_id))
    result = score_script(module, script, exercise, path, request.epochs, request.max_minutes, run, "",
                          request.threads)
    stage("the grader's scoring")
    return Outcome("PASS" if result.passed else "FAIL", fail_reason(result), result.score, result.script_seconds,
                   result.epochs)


def fail_reason(result) -> str:
    exercise = result.exercise
    if result.passed:
        return ""
    if not exercise.passes(result.score):
        return f"test {exercise.metric_name()} {exercise.show(result.score)} misses the bar ({exercise.bar_text()})"
    return f"took {result.script_seconds / 60:.1f} min, over the {exercise.minutes:g}-minute time limit"


def failure(err: BaseException, stage: str) -> Outcome:
    """A script's error as a verdict: out of memory, an exit of its own, or nnlab's sentence naming the function."""
    chain, cause = [], err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    memory = next((e for e in chain if isinstance(e, MemoryError)), None)
    if memory is not None:
        return Outcome("ERROR", f"out of memory during {stage}: {str(memory) or 'MemoryError'}")
    if isinstance(err, SystemExit):
        return Outcome("ERROR", f"the script exited by itself (sys.exit({err.code!r})) during {stage}, before it "
                                "was graded; a script must return its results, not exit")
    if isinstance(err, NnlabError):
        return Outcome("ERROR", str(err))
    return Outcome("ERROR", f"grading failed during {stage}: {type(err).__name__}: {err}")


def main(argv: list[str]) -> None:
    request = Request(**json.loads(Path(argv[0]).read_text()))
    limit_memory(request.memory_gb)
    stage = Stage(request.path("stage"))
    try:
        outcome = grade_here(request, stage)
    except BaseException as err:  # noqa: BLE001  (a student's script: anything, exits included, is a verdict)
        outcome = failure(err, stage.now)
    partial = request.path("verdict.json.partial")
    partial.write_text(json.dumps(asdict(outcome)))
    partial.replace(request.path("verdict.json"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # now, whatever threads the script left running


if __name__ == "__main__":
    main(sys.argv[1:])
