"""What nnlab imports at run time that is not its own: the user's plugins (modules that register builders) and
Keras, whose native libraries print start-up lines unless asked not to."""

import importlib
import importlib.util
import os
import sys
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
