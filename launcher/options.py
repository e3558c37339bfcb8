"""Typer options derived from the library's single definitions (demakeup_dist/choices.py, the model
registry), so that every command offers the same values under the same names."""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable


def choice_enum(name: str, values: Iterable[Any]) -> type[Enum]:
    """A str Enum of `values`, which Typer shows as `[a|b|c]` and checks; `.value` is the plain value."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)


def plain(value: Any) -> Any:
    """The library's value of a parsed option: an Enum member's value, anything else unchanged."""
    return value.value if isinstance(value, Enum) else value
