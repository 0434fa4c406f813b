"""User-facing errors: each carries one sentence that says what is wrong, where, and how to fix it."""

import difflib
from collections.abc import Iterable


class NnlabError(Exception):
    """A problem with the user's input (config, data, files); the CLI prints it as one sentence."""


class DataNotFoundError(NnlabError):
    pass


class ConfigError(NnlabError):
    """Caught before any run starts; the CLI exits with the config-error status."""


def closest(name: str, options: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name(kind: str, name: str, options: Iterable[str]) -> str:
    options = sorted(options)
    hint = closest(name, options)
    did_you_mean = f"; did you mean '{hint}'?" if hint else "."
    return f"Unknown {kind} '{name}': valid {kind} names are {', '.join(options)}{did_you_mean}"
