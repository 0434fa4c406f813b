"""`nnlab course grade SUBMISSIONS DATA_PATH --lab exer_N`: a class's scripts graded, each in a process of its own
(`isolate.py`), N at once on this machine or each as a SLURM job, one MLflow run a student; then the class table
(`classtable.py`).

This process keeps the store and its credentials: it opens each student's run, logs the submission, hands the
worker a folder, then sends what the worker queued in it and records the verdict. So every submission gets a run
that ends (FINISHED for PASS or FAIL, FAILED with the reason for an ERROR), whatever its script did.
"""

import math
import os
import re
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nnlab.config import TrackingConfig
from nnlab.course import layout
from nnlab.course.classtable import Row
from nnlab.course.grade import EXPERIMENT, run_tags, store_uri
from nnlab.course.isolate import INTERRUPTED, Outcome, Request, supervise
from nnlab.course.labs import Exercise, get_exercise
from nnlab.errors import ConfigError
from nnlab.tracking.accounts import redact

MEMORY_SHARE = 0.8  # of this machine's memory, split between the submissions graded at once
DEFAULT_WALL_MINUTES = 60  # the whole script's limit where the exercise states no time limit
SLURM_MEMORY_GB = 4
SEND_S = 120  # to send what a worker queued
# sbatch's --export for a grading job: this environment, less the grader's sign-in (the job needs no store)
NO_CREDENTIALS = "ALL,MLFLOW_TRACKING_USERNAME=,MLFLOW_TRACKING_PASSWORD=,MLFLOW_TRACKING_TOKEN="


@dataclass(frozen=True)
class Submission:
    student: str
    script: Path | None
    problem: str | None = None  # why it cannot be run: a folder without one script to grade
    folder: bool = False  # handed in as a folder (its other files are helpers the script may import)


@dataclass
class Options:
    lab: str
    out: Path
    jobs: int = 1
    epochs: int | None = None
    max_minutes: float | None = None
    wall_minutes: float | None = None
    memory_gb: float | None = None
    uri: str | None = None
    launcher: str = "local"
    partition: str | None = None


def find_submissions(folder: Path, lab: str) -> list[Submission]:
    """A student per `.py` file (named by its stem) or per subfolder holding one (named by the folder; of several,
    the one named like the exercise, e.g. exer_2.py)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give the folder of submissions: one .py file a student, or "
                          "a subfolder a student holding their .py file.")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            found.append(Submission(entry.stem, entry))
        elif entry.is_dir():
            found.append(in_folder(entry, lab))
    if not found:
        raise ConfigError(f"{folder} holds no .py files or subfolders; put one script a student there.")
    return found


def in_folder(folder: Path, lab: str) -> Submission:
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    named = [p for p in scripts if re.search(rf"exer_?{lab[-1]}", p.stem)] if len(scripts) > 1 else scripts
    if len(named) == 1:
        return Submission(folder.name, named[0], folder=True)
    listed = ", ".join(p.name for p in scripts) or "none"
    return Submission(folder.name, None, f"the folder {folder.name}/ holds {len(scripts)} .py files ({listed}); "
                                         f"leave one, or name the graded one {lab}.py")


def limits(options: Options, exercise: Exercise) -> tuple[float, float, int | None]:
    """(wall minutes, memory GB, CPU threads) of one submission: twice the training budget plus five minutes (an
    hour without one); this machine's memory and cores shared by the jobs at once (SLURM: 4 GB, 2 cores)."""
    budget = options.max_minutes or exercise.minutes
    wall = options.wall_minutes or (2 * budget + 5 if budget else DEFAULT_WALL_MINUTES)
    if options.launcher == "slurm":
        return wall, options.memory_gb or SLURM_MEMORY_GB, 2
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    memory = options.memory_gb or round(MEMORY_SHARE * total / options.jobs, 1)
    return wall, memory, max(1, (os.cpu_count() or 1) // options.jobs)


def grade_one(submission: Submission, data: Path, exercise: Exercise, options: Options, uri: str,
              cancel: threading.Event) -> Row:
    """One student's run: the submission logged, the worker run (here or on SLURM), its records sent, the verdict
    recorded; an error of the grader itself is this row's reason, never the class's end."""
    from nnlab.tracking import track
    from nnlab.tracking.outbox import sync

    wall, memory, threads = limits(options, exercise)
    folder = options.out / "work" / submission.student
    shutil.rmtree(folder, ignore_errors=True)
    tags = run_tags(exercise, submission.script or folder, data) | {"course.student": submission.student}
    try:
        tracking = TrackingConfig(uri=uri, experiment=experiment_of(uri, submission.student),
                                  run_name=f"{exercise.name}: {submission.student}")
        with track.start_run(tracking, tags) as run:
            run.params({"student": submission.student, "wall_minutes": wall, "memory_gb": memory})
            if submission.script is None:
                outcome = Outcome("ERROR", submission.problem or "no script")
            else:
                run.file(submission.script, "script")
                request = Request(str(copy_in(submission, folder)), str(data), exercise.name, run.run_id,
                                  str(folder), options.epochs, options.max_minutes, threads, memory)
                outcome = on_slurm(request, wall, options, run, cancel) if options.launcher == "slurm" else (
                    supervise(request, wall, cancel))
                left = sync(request.path("outbox"), run.client, run.run_id, SEND_S)
                if left:
                    outcome.reason += f" ({left} of its records could not be sent to the store)"
                if request.path("output.txt").exists():
                    run.file(request.path("output.txt"))
            record(run, outcome, exercise)
            if cancel.is_set():
                run.end_status = "KILLED"  # as the CLI says of an interrupted job's run
        return Row.of(submission.student, outcome, exercise, run.run_id)
    except Exception as err:  # noqa: BLE001  (the store, the disk: this student's row says so, the class goes on)
        failed = Outcome("ERROR", redact(f"the grader failed: {type(err).__name__}: {err}"))
        return Row.of(submission.student, failed, exercise, None, grader_failed=True)


def experiment_of(uri: str, student: str) -> str:
    """On a server with accounts, graded by a teacher, a student's run goes to their own `<student>/course` (made
    here if missing, READ for them: they see their grade, no one else does); elsewhere, and for a student with no
    account, to 'course' (on a server, the grader's own)."""
    from mlflow import MlflowClient

    from nnlab.tracking.accounts import account, experiment_by_name, is_account, let_read
    from nnlab.tracking.store import ensure_experiment

    if account(uri) is None or not is_account(uri, student):
        return EXPERIMENT
    name, client = f"{student}/{EXPERIMENT}", MlflowClient(uri)
    if experiment_by_name(client, name) is None:
        let_read(uri, student, ensure_experiment(client, name, None))
    return name


def copy_in(submission: Submission, folder: Path) -> Path:
    """The submission (its folder's files, for helpers beside the script) copied to the worker's folder."""
    target = folder / "submission"
    if submission.folder:
        shutil.copytree(submission.script.parent, target, dirs_exist_ok=True)
    else:
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(submission.script, target)
    return target / submission.script.name


def record(run, outcome: Outcome, exercise: Exercise) -> None:
    run.tags({"course.verdict": outcome.verdict, "course.reason": outcome.reason or None})
    run.metrics({"peak_memory_gb": outcome.peak_gb, "wall_seconds": outcome.seconds})
    if outcome.verdict == "ERROR":
        run.note(f"{exercise.name} ({exercise.title}): ERROR: {outcome.reason}")
        run.fail(outcome.reason)


def on_slurm(request: Request, wall: float, options: Options, run, cancel: threading.Event) -> Outcome:
    """The worker and its watcher as a SLURM job: the same limits inside it, SLURM's time and memory around it.
    The job gets no store: the worker's outbox comes back on the shared filesystem, and this process sends it."""
    import submitit

    from nnlab.job.slurm import follow_without_accounting, job_failure

    follow_without_accounting()
    executor = submitit.SlurmExecutor(folder=Path(request.folder) / "slurm")
    executor.update_parameters(time=math.ceil(wall) + 5, mem=f"{math.ceil(request.memory_gb * 1.25)}G",
                               cpus_per_task=request.threads or 1, job_name=f"grade-{Path(request.folder).name}",
                               additional_parameters={"export": NO_CREDENTIALS},
                               **({"partition": options.partition} if options.partition else {}))
    job = executor.submit(supervise, request, wall)
    run.tags({"slurm_job_id": job.job_id, "slurm_log": str(job.paths.stdout)})
    while not job.done():
        if cancel.wait(2):
            job.cancel(check=False)
            return Outcome("ERROR", f"{INTERRUPTED} (SLURM job {job.job_id} cancelled)")
    try:
        return job.result()
    except Exception as err:  # noqa: BLE001  (the job died on the cluster)
        return Outcome("ERROR", f"on SLURM: {job_failure(err)}")


def grade_class(submissions: Path, data: Path, options: Options) -> list[Row]:
    """Every submission graded, `options.jobs` at once; a line each as it ends."""
    exercise = get_exercise(options.lab)
    data = data.expanduser().resolve()
    layout.check(exercise, data)
    found = find_submissions(submissions.expanduser().resolve(), exercise.name)
    if options.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {options.jobs}.")
    uri, printing, cancel = store_uri(options.uri), threading.Lock(), threading.Event()

    def one(submission: Submission) -> Row:
        row = grade_one(submission, data, exercise, options, uri, cancel)
        with printing:
            print(f"nnlab course: {row.line()}", flush=True)
        return row

    print(f"nnlab course: grading {len(found)} submissions for {exercise.name} ({exercise.title}), "
          f"{options.jobs} at once{' on SLURM' if options.launcher == 'slurm' else ''}", file=sys.stderr, flush=True)
    from nnlab.tracking.track import install_signal_handlers

    install_signal_handlers()
    pool = ThreadPoolExecutor(max_workers=options.jobs)
    try:
        return list(pool.map(one, found))
    except BaseException:  # Ctrl-C, SIGTERM: the scripts running now are killed, their runs end; the rest never start
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
