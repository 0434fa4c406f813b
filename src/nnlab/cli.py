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
from nnlab.tracking.accounts import redact  # no password of a store's URL in what the CLI prints

EXIT_CONFIG, EXIT_RUNTIME, EXIT_INTERRUPTED = 2, 1, 130
COMMANDS = ("report", "resume", "runs", "predict", "evaluate", "detect", "course", "labs", "server")
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


def subcommand(name: str, argv: list[str]) -> None:
    """`nnlab NAME ...`: each command's module is imported only when it runs, so that `nnlab --cfg job` and
    config errors stay light."""
    if name == "report":
        from nnlab.reports.command import main
    elif name == "resume":
        from nnlab.job.resume import main
    elif name == "runs":
        from nnlab.tracking.runs import main
    elif name == "predict":
        from nnlab.use.predict import main
    elif name == "evaluate":
        from nnlab.use.evaluate import main
    elif name == "detect":
        from nnlab.use.detect import main
    elif name == "course":
        from nnlab.course.cli import main
    elif name == "server":
        from nnlab.server.command import main
    else:  # "labs"
        from nnlab.reports.labindex import main
    main(argv)


def sweep_args(argv: list[str]) -> list[str]:
    """`nnlab sweep NAME [overrides]` is `nnlab -m +sweep=NAME [overrides]`."""
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise ConfigError("Name a sweep preset: nnlab sweep NAME [overrides]; `nnlab list` shows the presets.")
    return ["--multirun", f"+sweep={argv[0]}", *argv[1:]]


def disk_full(err: BaseException) -> str | None:
    """One sentence for a full disk that no part of nnlab put in words (a write of a library, a report file):
    the file's folder and its free space; None if `err` is not one."""
    from nnlab.files import is_disk_full, no_space
    from nnlab.tracking.store import STORE_FULL, store_is_full

    if store_is_full(err):
        return (f"The MLflow store's disk is full (SQLite: {STORE_FULL}); free some space there or point "
                "tracking.uri at a larger disk.")
    if not is_disk_full(err):
        return None
    chain, filename = err, None
    while chain is not None and filename is None:
        filename = getattr(chain, "filename", None)
        chain = chain.__cause__ or chain.__context__
    folder = Path(os.fsdecode(filename)).parent if filename else Path.cwd()
    return str(no_space(folder, "on the disk", "free some space there, or write elsewhere"))


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
        print(f"nnlab: error: {redact(str(err))}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_RUNTIME)
    except Exception as err:  # noqa: BLE001  (the CLI's last line of defence: one sentence, non-zero)
        if full_errors:
            raise
        message = config_error(err)
        if message is not None:
            print(f"nnlab: error: {message}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        message = disk_full(err)
        if message is not None:
            print(f"nnlab: error: {message}", file=sys.stderr)
            sys.exit(EXIT_RUNTIME)
        print(f"nnlab: error: {type(err).__name__}: {redact(str(err))} (HYDRA_FULL_ERROR=1 shows the traceback; "
              f"a started run keeps it in error.txt).", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)


def main() -> None:
    args = sys.argv[1:]
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user's choice, before we set it below
    if args[:1] == ["list"]:
        list_everything()
        return
    if args[:1] and args[0] in COMMANDS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        guarded(lambda: subcommand(args[0], args[1:]), full_errors)
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
    # Loaded only where a sweep ran (importing it would load MLflow for `--cfg job` too).
    failed = getattr(sys.modules.get("nnlab.job.sweep"), "failed", [])
    if failed:  # a job's run did not finish though the launcher returned: the sweep's parent said so, and so do we
        print(f"nnlab: error: {'; '.join(failed)}.", file=sys.stderr)
        sys.exit(EXIT_RUNTIME)
