"""Command line: `nnlab [hydra overrides]` trains one job (or a sweep with -m); `nnlab sweep NAME` runs a sweep
preset; `nnlab report` builds the comparison table of a sweep (`--lab NAME`: a lab's report); `nnlab list` shows
what exists; `nnlab labs` lists the course's labs.

Errors reach the user as one sentence (what, where, how to fix) and a non-zero exit; HYDRA_FULL_ERROR=1
brings back full tracebacks.
"""

import os
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nnlab import config as _config  # noqa: F401  (registers the schemas before Hydra composes)
from nnlab.errors import ConfigError, NnlabError, closest, unknown_name

EXIT_CONFIG, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 1, 130
GROUPS = ("dataset", "model", "optimizer", "trainer", "tracking", "experiment", "sweep")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> float | None:
    from nnlab.job.app import run

    return run(cfg)


def config_error(err: BaseException) -> str | None:
    """One sentence for a Hydra/OmegaConf composition error, or None if `err` is not one."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    chain = [err]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for e in chain:
        if isinstance(e, MissingConfigException) and e.missing_cfg_file:
            group, _, name = e.missing_cfg_file.rpartition("/")
            if e.options:
                return unknown_name(group or "config", name, e.options) + " (see `nnlab list`)."
            return f"Config '{e.missing_cfg_file}' not found; check the name or hydra.searchpath."
        if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and getattr(e, "full_key", None):
            return unknown_key(e)
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            msg = str(e.msg).strip().splitlines()[0].rstrip(".")
            return f"Invalid value for {e.full_key}: {msg}; fix it in the YAML file or the override."
    for e in chain:
        if isinstance(e, (HydraException, OmegaConfBaseException)):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"Config error: {first}"
    return None


def unknown_key(err) -> str:
    parent, _, key = err.full_key.rpartition(".")
    where = parent or "the root config"
    valid = []
    schema = getattr(err, "object_type", None)
    if schema is not None and hasattr(schema, "__dataclass_fields__"):
        valid = sorted(schema.__dataclass_fields__)
    if not valid:
        return f"Unknown key '{err.full_key}'; remove it, or add it with a leading '+' if it is meant to be new."
    hint = closest(key, valid)
    guess = f"; did you mean '{hint}'?" if hint else "."
    return f"Unknown key '{key}' in {where}: valid keys are {', '.join(valid)}{guess}"


def help_groups() -> str:
    """The config groups and their options for `nnlab --help` (conf/config.yaml's hydra.help.template), without
    Hydra's own groups and the internal schema/* groups nnlab registers for validation."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    if not GlobalHydra.instance().is_initialized():
        return ""
    loader = GlobalHydra.instance().config_loader()
    lines: list[str] = []

    def walk(parent: str) -> None:
        for group in sorted(loader.list_groups(parent)):
            name = f"{parent}/{group}" if parent else group
            if name in ("hydra", "schema"):
                continue
            options = loader.get_group_options(name, ObjectType.CONFIG)
            if options:
                lines.append(f"{name}: {', '.join(sorted(options))}")
            walk(name)

    walk("")
    return "\n".join(lines)


if not OmegaConf.has_resolver("nnlab.help_groups"):
    OmegaConf.register_new_resolver("nnlab.help_groups", help_groups)


def quiet_failed_jobs() -> None:
    """Stop Hydra writing "Error executing job with overrides: [...]" to stderr before it re-raises a failed
    job's exception (hydra.core.utils.JobReturn.return_value: a plain sys.stderr.write, no logger to filter), so
    the CLI's own sentence is the one line a failed job prints. The exception itself is raised as before."""
    from hydra.core.utils import JobReturn, JobStatus

    prop = getattr(JobReturn, "return_value", None)
    if not isinstance(prop, property) or getattr(prop.fget, "nnlab_quiet", False):
        return

    def return_value(self):
        if self.status == JobStatus.FAILED:
            raise self._return_value
        return prop.fget(self)

    return_value.nnlab_quiet = True  # type: ignore[attr-defined]
    JobReturn.return_value = property(return_value, prop.fset)  # type: ignore[method-assign]


def list_everything() -> None:
    """Every config preset (Hydra groups, including user search paths) and every registered builder."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        print("Config presets (choose with GROUP=NAME, experiments with +experiment=NAME):")
        for group in GROUPS:
            names = loader.get_group_options(group)
            print(f"  {group:<11} {', '.join(names)}")
    from nnlab.data import DATASETS
    from nnlab.models import MODELS
    from nnlab.tasks import TASKS
    from nnlab.training.optim import OPTIMIZERS

    print("Registered builders (the `name` key of a preset; a dataset names the task it serves):")
    for registry in (DATASETS, MODELS, OPTIMIZERS, TASKS):
        print(f"  {registry.kind:<11} {', '.join(registry.names())}")


def stop_on_sigterm(signum, frame) -> None:
    # `kill`, `timeout`, a scheduler's preemption: unwind like Ctrl-C so the run is marked KILLED, not left RUNNING.
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def report_main(argv: list[str]) -> None:
    import argparse

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

    from nnlab.reports import report
    from nnlab.tracking import store

    client = store.client(args.uri)
    name = args.sweep or args.parent or args.experiment
    result = report.build(client, args.experiment, args.sweep, args.parent,
                          out=args.out or Path("reports") / name, formats=split(args.formats),
                          columns=split(args.columns), sort=args.sort, ascending=args.ascending,
                          log_to_parent=args.log)
    print(result.table.to_markdown(index=False, floatfmt=".4g"))
    print(f"\nnnlab: report of '{result.title}' ({len(result.table)} runs) written to "
          f"{', '.join(str(p) for p in result.paths)}")
    if args.register:
        print(report.register_best(client, result, args.register))


def labs_main(argv: list[str]) -> None:
    from nnlab.reports.labindex import main as labs

    labs(argv)


def predict_main(argv: list[str]) -> None:
    from nnlab.use.predict import main as predict

    predict(argv)


def evaluate_main(argv: list[str]) -> None:
    from nnlab.use.evaluate import main as evaluate

    evaluate(argv)


def detect_main(argv: list[str]) -> None:
    from nnlab.use.detect import main as detect

    detect(argv)


def runs_main(argv: list[str]) -> None:
    from nnlab.tracking.runs import main as runs

    runs(argv)


def course_main(argv: list[str]) -> None:
    from nnlab.course.cli import main as course

    course(argv)


def resume_main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="nnlab resume", description="Continue an interrupted run (killed, "
                                     "Ctrl-C, SIGTERM, a crash) from its last checkpoint, in the same MLflow run.")
    parser.add_argument("run_id", help="the run's id (mlflow ui, or `nnlab runs --stale`)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    args = parser.parse_args(argv)
    from nnlab.job.resume import resume
    from nnlab.tracking import track

    resume(args.run_id, track.find_store(args.uri))


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def sweep_args(argv: list[str]) -> list[str]:
    """`nnlab sweep NAME [overrides]` is `nnlab -m +sweep=NAME [overrides]`."""
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise ConfigError("Name a sweep preset: nnlab sweep NAME [overrides]; `nnlab list` shows the presets.")
    return ["--multirun", f"+sweep={argv[0]}", *argv[1:]]


def guarded(action, full_errors: bool = False):
    """Run `action` the CLI's way: errors become one sentence on stderr and a non-zero exit (tracebacks
    where the user set HYDRA_FULL_ERROR=1)."""
    try:
        return action()
    except SystemExit:
        raise
    except KeyboardInterrupt as err:
        # KeyboardInterrupt from Ctrl-C has no message; SIGTERM's (stop_on_sigterm) names the signal.
        print(f"nnlab: interrupted ({str(err) or 'Ctrl-C'}); a started run is marked KILLED.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except NnlabError as err:
        if full_errors:
            raise
        print(f"nnlab: error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_RUNTIME)
    except Exception as err:  # noqa: BLE001  (the CLI's last line of defence: one sentence, non-zero)
        if full_errors:
            raise
        message = config_error(err)
        if message is not None:
            print(f"nnlab: error: {message}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        print(f"nnlab: error: {type(err).__name__}: {err} (HYDRA_FULL_ERROR=1 shows the traceback; "
              f"a started run keeps it in error.txt).", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)


def main() -> None:
    args = sys.argv[1:]
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user's choice, before we set it below
    if args[:1] == ["list"]:
        list_everything()
        return
    commands = {"report": report_main, "resume": resume_main, "runs": runs_main, "predict": predict_main,
                "evaluate": evaluate_main, "detect": detect_main, "course": course_main, "labs": labs_main}
    if args[:1] and args[0] in commands:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        guarded(lambda: commands[args[0]](args[1:]), full_errors)
        return
    if args[:1] == ["sweep"]:
        sys.argv[1:] = args = guarded(lambda: sweep_args(args[1:]), full_errors)
    if args[:1] in (["--version"], ["version"]):
        from nnlab import __version__

        print(f"nnlab {__version__}")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables..."
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's multi-line report
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    quiet_failed_jobs()
    guarded(hydra_app, full_errors)
