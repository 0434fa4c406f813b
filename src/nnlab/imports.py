"""What nnlab imports at run time that is not its own: the user's plugins (modules that register builders) and
Keras, whose native libraries print start-up lines unless asked not to."""

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nnlab.errors import NnlabError


def import_plugins(plugins: list[str]) -> None:
    """Import user modules (dotted names, or .py paths relative to the working directory) so they register.
    A plugin that fails to import is named with the file and line where it failed."""
    import traceback

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).expanduser().resolve()
                if not path.is_file():
                    raise NnlabError(f"Plugin file {path} does not exist; fix the `plugins` list in your config.")
                loaded = sys.modules.get(f"nnlab_plugin_{path.stem}")
                if loaded is not None and getattr(loaded, "__file__", None) == str(path):
                    continue  # imported once per process, as a module is (its registrations stand)
                spec = importlib.util.spec_from_file_location(f"nnlab_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(spec.name, None)  # no half-imported module left behind
                    raise
            else:
                try:
                    importlib.import_module(plugin)
                except ModuleNotFoundError as err:
                    if err.name and plugin != err.name and not plugin.startswith(f"{err.name}."):
                        raise  # the plugin exists; something it imports does not (reported below)
                    raise NnlabError(f"Plugin module '{plugin}' cannot be imported ({err}); install it, "
                                     "or list a .py file path in `plugins` instead.") from err
        except NnlabError:
            raise
        except SyntaxError as err:  # its message alone ("invalid syntax") does not say where
            code = f": {err.text.strip()}" if err.text and err.text.strip() else ""
            raise NnlabError(f"Plugin '{plugin}' has a syntax error ({err.msg}) in {err.filename}, line "
                             f"{err.lineno}{code}; fix the file or remove it from `plugins`.") from err
        except Exception as err:
            frames = traceback.extract_tb(err.__traceback__)
            mine = Path(plugin).expanduser().resolve() if plugin.endswith(".py") else None
            frame = ([f for f in frames if Path(f.filename) == mine] or frames)[-1]  # its own line, else the last
            what = (str(err).strip().splitlines() or [""])[0]
            raise NnlabError(f"Plugin '{plugin}' failed while importing: {type(err).__name__}: {what} (in "
                             f"{frame.filename}, line {frame.lineno}); fix the plugin or remove it from "
                             "`plugins`.") from err


def plugin_key(plugin: str) -> str:
    """What identifies a plugin across machines: a .py file's name (a run trained elsewhere lists its own path,
    the user passes their copy), else the dotted module name."""
    return Path(plugin).name if plugin.endswith(".py") else plugin


def imported_already(plugin: str) -> bool:
    """Whether this process imported the plugin already (the user's own training, an earlier --plugins)."""
    return (f"nnlab_plugin_{Path(plugin).stem}" if plugin.endswith(".py") else plugin) in sys.modules


def run_plugins(listed: list[str], passed: Sequence[str] = (), trust: bool = False, run_id: str = "") -> None:
    """Import the plugins a command on a stored run (predict, evaluate, detect, resume) may use. Nothing named
    only in the run's stored config.yaml (`listed`) runs without the user's say, since whoever can write a run
    into a shared store could name any file there: the user's `passed` plugins are imported; the listed ones
    only with `trust` (--trust-plugins). A listed plugin that is neither passed (same .py file name, or same
    module name), nor imported in this process already, nor trusted fails up front, before the model loads,
    in one sentence naming it and saying how to allow it. A run that lists no plugins needs nothing."""
    passed = list(passed)
    import_plugins(passed)
    given = {plugin_key(p) for p in passed}
    missing = [p for p in listed if plugin_key(p) not in given and not imported_already(p)]
    if missing and not trust:
        them = "them" if len(missing) > 1 else "it"
        raise NnlabError(f"Run {run_id}'s config lists plugin{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)}, which nnlab does not import from a stored run unasked (that would "
                         f"run code from the store); to allow {them}, pass --plugins {' '.join(missing)} (your own "
                         f"copy) or --trust-plugins (imports {them} as the run lists {them}).")
    import_plugins(missing)


def add_plugin_options(parser) -> None:
    """--plugins and --trust-plugins on an argparse parser of a command on a stored run."""
    parser.add_argument("--plugins", nargs="+", default=[], metavar="P", help="plugin modules or .py files to "
                        "import (e.g. your copy of the plugins the run's config lists)")
    parser.add_argument("--trust-plugins", action="store_true", help="import the plugins the run's stored config "
                        "lists: this runs code from the store, so only for runs whose authors you trust")


def import_keras_quietly() -> None:
    """TensorFlow's native libraries print start-up lines (absl, oneDNN) to file descriptor 2 while they load,
    whatever TF_CPP_MIN_LOG_LEVEL says; below level 2 (the CLI's default) they stay visible, as asked."""
    if "keras" in sys.modules or int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0) < 2:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
