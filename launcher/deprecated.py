"""Options renamed so that every command says the same thing the same way (--batch-size, --models).

The old spelling still works for a while: declared as a hidden option, its value is passed through
`renamed`, which says once on stderr what to write instead.
"""

from __future__ import annotations

from typing import TypeVar

import typer

T = TypeVar("T")


def renamed(old: str, new: str, old_value: T | None, new_value: T) -> T:
    """`new_value`, unless the deprecated spelling `old` was given: then its value, with a line on stderr."""
    if old_value is None:
        return new_value
    typer.echo(f"{old} is deprecated: use {new}", err=True)
    return old_value
