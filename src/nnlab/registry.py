"""Name -> builder registries, filled by decorators where each builder is defined."""

from collections.abc import Callable
from typing import Any

from nnlab.errors import NnlabError, unknown_name


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`info`: facts the caller may check before building (a model's `inputs`: images or sequences)."""
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders and self._builders[name] is not builder:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            self._info[name] = info
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._builders[name]
        except KeyError:
            raise NnlabError(unknown_name(self.kind, name, self._builders)) from None

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)  # an unknown name fails with the closest match
        return self._info.get(name, {})

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
