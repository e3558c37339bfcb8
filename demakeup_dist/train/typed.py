"""Values from YAML or the command line converted to a declared type, or refused.

YAML 1.1 reads `1e-3` and `"2"` as strings; a config key declared `float` or `int` must not pass them
on to the arithmetic that would fail far from the file (or, for a bool, silently treat "false" as true).
"""

from __future__ import annotations

import types
import typing
from typing import Any

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def convert(value: Any, kind: Any) -> Any:
    """`value` as type `kind` (a field annotation), or TypeError/ValueError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError
        return tuple(convert(v, a) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [convert(v, args[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise TypeError
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        if kind is float:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    return value


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe(kind: Any) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return f"{describe(args[0])} or null"
    if typing.get_origin(kind) is tuple:
        return f"a list of {len(args)} values, each {describe(args[0])}"
    if typing.get_origin(kind) is list:
        return f"a list of values, each {describe(args[0])}"
    if typing.get_origin(kind) is dict:
        return "a mapping of keys to values"
    return _TYPE_WORDS.get(kind, str(kind))


def like(key: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (any list for a sequence, anything for None)."""
    if default is None:
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return list(value)
    try:
        return convert(value, type(default))
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected {describe(type(default))}, got {value!r}") from None
