"""`nnlab report`: the comparison table and figures of a sweep, a parent run or an experiment (`--lab NAME`: one
lab's report), with `--register` for the best run's model."""

import argparse
from pathlib import Path

from nnlab.reports.register import register_best
from nnlab.reports.report import build
from nnlab.tracking import store


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnlab report", description="Comparison table and figures for a "
                                     "sweep (its id or parent run) or a whole experiment, from MLflow.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--sweep", help="sweep id (the parent run's name)")
    which.add_argument("--parent", help="parent run id")
    which.add_argument("--experiment", help="experiment name: every run in it")
    which.add_argument("--lab", help="a lab of `nnlab labs`: lab_NAME.md and .html (its runs, numbers, bar, figures)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--out", help="output folder (default: reports/<sweep or experiment>)")
    parser.add_argument("--formats", default="md,csv,tex,html", help="comma-separated: md,csv,tex,html")
    parser.add_argument("--columns", default="", help="comma-separated columns to keep (params or metrics)")
    parser.add_argument("--sort", help="column to sort by (default: the headline test metric)")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", action="store_true", default=None)
    order.add_argument("--descending", dest="ascending", action="store_false")
    parser.add_argument("--log", action="store_true", help="also log the files to the sweep's parent run, "
                        "replacing the report the sweep logged when it ended")
    parser.add_argument("--register", metavar="NAME", help="register the MLflow model of the best run (the "
                        "table's first row) in the Model Registry as a new version of NAME")
    args = parser.parse_args(argv)
    if args.lab:
        from nnlab.reports.labreport import main as lab_report

        lab_report(args.lab, args.uri, args.out)
        return

    client = store.client(args.uri)
    name = args.sweep or args.parent or args.experiment
    result = build(client, args.experiment, args.sweep, args.parent,
                          out=args.out or Path("reports") / name, formats=split(args.formats),
                          columns=split(args.columns), sort=args.sort, ascending=args.ascending,
                          log_to_parent=args.log)
    print(result.table.to_markdown(index=False, floatfmt=".4g"))
    print(f"\nnnlab: report of '{result.title}' ({len(result.table)} runs) written to "
          f"{', '.join(str(p) for p in result.paths)}")
    if args.register:
        print(register_best(client, result, args.register))


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
