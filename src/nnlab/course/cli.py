"""`nnlab course init|run|prepare`: the course platform's exercises, graded and rehearsed offline."""

import argparse
import shutil
import sys
from pathlib import Path

from nnlab.errors import ConfigError

USAGE = """examples:
  nnlab course init exer_2 my_exer_2.py                # nnlab's script for exercise 2, to read or edit
  nnlab course prepare fashion_mnist data/fashion      # nnlab's copy of the data in the platform's layout
  nnlab course run my_exer_2.py data/fashion           # grade it the platform's way: PASS or FAIL, in MLflow
  nnlab course grade class/ data/fashion --lab exer_2 --jobs 2   # a class: each script in its own process

exit status: `run` 0 on PASS, 1 on FAIL or a script that failed, 2 for a usage error; `grade` 0 once every
submission has its verdict (whatever the verdicts), 1 where the grader itself could not grade one, 2 for a usage
error."""


def parser() -> argparse.ArgumentParser:
    from nnlab.course.labs import EXERCISES

    top = argparse.ArgumentParser(prog="nnlab course", description="The online course's exercise scripts "
                                  "(load_train, create_model, train_model): copy, grade, rehearse.", epilog=USAGE,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="copy nnlab's script for an exercise to DEST (a file or a folder)")
    init.add_argument("exercise", help=", ".join(EXERCISES))
    init.add_argument("dest")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    run = commands.add_parser("run", help="grade SCRIPT on DATA_PATH as the platform does, tracked in MLflow")
    run.add_argument("script")
    run.add_argument("data_path", help="the exercise's data in the platform's layout (`nnlab course prepare`)")
    run.add_argument("--lab", help="the exercise whose bar applies (default: exer_N in the script's name)")
    run.add_argument("--epochs", type=int, help="every fit the script calls trains this many epochs")
    run.add_argument("--max-minutes", type=float, help="stop training before a batch would overrun this, "
                     "mid-epoch if need be (default: the exercise's time limit)")
    run.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    grade = commands.add_parser("grade", help="grade every script in SUBMISSIONS, each in a process of its own "
                                "with limits; one MLflow run a student, and the class table")
    grade.add_argument("submissions", help="a folder: one .py a student (named by its file), or a subfolder a "
                       "student holding their .py")
    grade.add_argument("data_path", help="the exercise's data in the platform's layout (`nnlab course prepare`)")
    grade.add_argument("--lab", required=True, help="the exercise: " + ", ".join(EXERCISES))
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once, sharing the cores and "
                       "memory (default 1)")
    grade.add_argument("--epochs", type=int, help="every fit a script calls trains this many epochs")
    grade.add_argument("--max-minutes", type=float, help="the training budget (default: the exercise's time limit)")
    grade.add_argument("--wall-minutes", type=float, help="a hard limit on each whole script, loading included "
                       "(default: twice the training budget plus 5 minutes; 60 without one)")
    grade.add_argument("--memory-gb", type=float, help="each script's memory limit (default: 80%% of this "
                       "machine's memory over --jobs; on SLURM 4)")
    grade.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    grade.add_argument("--out", default="grades", help="the class table's folder (default ./grades); each "
                       "script's working folder is under OUT/work")
    grade.add_argument("--launcher", choices=("local", "slurm"), default="local", help="slurm: each submission is "
                       "a SLURM job (the grader waits for them; the store stays with it)")
    grade.add_argument("--partition", help="the SLURM partition (default: the cluster's)")
    prepare = commands.add_parser("prepare", help="write nnlab's copy of a dataset in the platform's layout")
    prepare.add_argument("name", help="fashion_mnist, mnist, fruits or faces")
    prepare.add_argument("dest", help="a new (or empty) folder")
    prepare.add_argument("--from", dest="source", help="the copy's folder (default: the dataset preset's path, "
                         "under $NNLAB_DATA_DIR)")
    prepare.add_argument("--limit", type=int, help="at most this many examples (a seeded draw) of the training "
                         "pool (the fruits and faces folders: of all)")
    return top


def init(exercise: str, dest: str, force: bool) -> Path:
    from nnlab.course.labs import script_path

    source = script_path(exercise)
    target = Path(dest).expanduser()
    if target.is_dir() or dest.endswith(("/", "\\")):
        target = target / source.name
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; choose another DEST, or add --force to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


LEFT_OUT = {"--epochs": "the script's own", "--max-minutes": "the exercise's time limit", "--jobs": "one at a time",
            "--wall-minutes": "twice the training budget plus 5 minutes", "--limit": "every example",
            "--memory-gb": "80% of this machine's memory over --jobs"}  # what leaving each flag out means


def positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be positive, not {value:g}; leave it out for {LEFT_OUT[name]}.")


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.command == "init":
        target = init(args.exercise, args.dest, args.force)
        print(f"nnlab: wrote {target}; grade it with `nnlab course run {target} DATA_PATH`.")
    elif args.command == "prepare":
        from nnlab.course.prepare import prepare

        positive("--limit", args.limit)
        print(f"nnlab: wrote {prepare(args.name, args.dest, args.source, args.limit)}.")
    elif args.command == "grade":
        grade_folder(args)
    else:
        from nnlab.course.grade import grade

        positive("--epochs", args.epochs)
        positive("--max-minutes", args.max_minutes)
        result = grade(args.script, args.data_path, args.lab, args.epochs, args.max_minutes, args.uri)
        print(f"\nnnlab course: {result.verdict()}\nnnlab: run {result.run_id} in experiment 'course' of "
              f"{result.uri}")
        sys.stdout.flush()
        if not result.passed:
            sys.exit(1)


def grade_folder(args: argparse.Namespace) -> None:
    from nnlab.course import classtable
    from nnlab.course.classroom import Options, grade_class
    from nnlab.course.labs import get_exercise
    from nnlab.errors import NnlabError

    for flag in ("jobs", "epochs", "max_minutes", "wall_minutes", "memory_gb"):
        positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    out = Path(args.out).expanduser().resolve()
    options = Options(args.lab, out, args.jobs, args.epochs, args.max_minutes, args.wall_minutes, args.memory_gb,
                      args.uri, args.launcher, args.partition)
    rows = grade_class(Path(args.submissions), Path(args.data_path), options)
    exercise = get_exercise(args.lab)
    paths = classtable.write(rows, exercise, out)
    print(f"\nnnlab course: {classtable.summary(rows, exercise)}\nnnlab: wrote {', '.join(map(str, paths))}")
    sys.stdout.flush()
    failed = [r.student for r in rows if r.grader_failed]
    if failed:
        raise NnlabError(f"the grader could not grade {len(failed)} submissions ({', '.join(failed)}); their rows "
                         "say why: fix that and grade again.")
