"""Importable helpers for tests (conftest fixtures cannot be imported by name)."""

from conftest import make_idx_dataset, write_idx  # noqa: F401
