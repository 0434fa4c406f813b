"""`nnlab course init|run|prepare`: the course platform's exercises, graded and rehearsed offline."""

import argparse
import shutil
import sys
from pathlib import Path

from nnlab.errors import ConfigError

USAGE = """examples:
  nnlab course init exer_2 my_exer_2.py                # nnlab's script for exercise 2, to read or edit
  nnlab course prepare fashion_mnist data/fashion      # nnlab's copy of the data in the platform's layout
  nnlab course run my_exer_2.py data/fashion           # grade it the platform's way: PASS or FAIL, in MLflow"""


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


def positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be positive, not {value:g}; leave it out to use the script's own.")


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.command == "init":
        target = init(args.exercise, args.dest, args.force)
        print(f"nnlab: wrote {target}; grade it with `nnlab course run {target} DATA_PATH`.")
    elif args.command == "prepare":
        from nnlab.course.prepare import prepare

        positive("--limit", args.limit)
        print(f"nnlab: wrote {prepare(args.name, args.dest, args.source, args.limit)}.")
    else:
        from nnlab.course.grade import grade

        positive("--epochs", args.epochs)
        positive("--max-minutes", args.max_minutes)
        result = grade(args.script, args.data_path, args.lab, args.epochs, args.max_minutes, args.uri)
        print(f"\nnnlab course: {result.verdict()}\nnnlab: run {result.run_id} in experiment 'course' of "
              f"{result.uri}")
        sys.stdout.flush()
