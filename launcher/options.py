"""Typer options derived from the library's single definitions (demakeup_dist/choices.py), so that every
command offers the same values under the same names. Typer checks an Enum option and lists its values
in --help; commands hand the library `plain(value)`."""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable, TypeVar

import typer

from demakeup_dist import choices

T = TypeVar("T")


def choice_enum(name: str, values: Iterable[Any]) -> type[Enum]:
    """A str Enum of `values` (Typer shows `[a|b|c]` and refuses anything else)."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)


def plain(value: Any) -> Any:
    """The library's value of a parsed option: an Enum member's value, anything else unchanged."""
    return value.value if isinstance(value, Enum) else value


Model = choice_enum("Model", choices.MODEL_NAMES)
Precision = choice_enum("Precision", choices.PRECISIONS)
Strategy = choice_enum("Strategy", choices.STRATEGIES)
ZeroStage = choice_enum("ZeroStage", choices.ZERO_STAGES)
WandbMode = choice_enum("WandbMode", choices.WANDB_MODES)
DataCache = choice_enum("DataCache", choices.DATA_CACHES)
CompileMode = choice_enum("CompileMode", choices.COMPILE_MODES)
Split = choice_enum("Split", choices.SPLITS)
Device = choice_enum("Device", choices.DEVICES)
LrScaling = choice_enum("LrScaling", choices.LR_SCALINGS)

ALL_MODELS = ",".join(choices.MODEL_NAMES)
MODELS_HELP = f"Comma-separated networks, any of {ALL_MODELS}."
MODEL_CHECK_HELP = "The network the weights must hold; by default the one their metadata names."
RESUME_HELP = ("auto: continue the run dir's newest checkpoint if there is one, else start; latest: continue it "
               "(it must exist)")


def warn_renamed(old: str, new: str) -> None:
    """The one line on stderr for an old spelling that still works: what to write instead."""
    typer.secho(f"warning: {old} is deprecated: use {new}", err=True, fg=typer.colors.YELLOW)


def renamed(old: str, new: str, old_value: T | None, new_value: T) -> T:
    """`new_value`, unless the renamed option `old` (kept as a hidden option) was given: then its value,
    with `warn_renamed`'s line."""
    if old_value is None:
        return new_value
    warn_renamed(old, new)
    return old_value


def models_list(text: str) -> tuple[str, ...]:
    """A `--models p1,p3` value, checked."""
    return choices.parse_list("--models", text, choices.MODEL_NAMES)
