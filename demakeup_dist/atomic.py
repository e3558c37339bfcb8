"""Files written whole or not at all, and read back with errors that name them.

Nothing half-written may look complete: every file and folder the tool writes appears under its
final name only once whole. A write goes to a temporary name beside the target (same filesystem, so
the rename is atomic) and is renamed at the end; a failure removes the temporary and leaves any
previous version untouched."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".tmp-"
"""Temporary names contain this; readers that list a folder pass them over."""


def temporary_name(path: Path) -> Path:
    """A fresh name beside `path` that no other process or thread uses."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def leftovers(path: Path) -> list[Path]:
    """Temporaries of `path` that an interrupted writer (kill -9, power loss) left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}{TMP_MARK}*"))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a folder); on success it replaces `path`."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        replace(tmp, path)
    except BaseException:  # Ctrl-C included
        _remove(tmp)
        raise


def replace(tmp: Path, path: Path) -> None:
    """Move the finished `tmp` to `path`. A file is replaced atomically; an existing folder is moved
    aside first and deleted only once the new one is in place."""
    path = Path(path)
    if Path(tmp).is_dir() and path.exists():
        old = temporary_name(path)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any, **dump_kw: Any) -> None:
    write_text(path, json.dumps(data, **{"indent": 1, **dump_kw}) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path`; `default` when it does not exist (FileNotFoundError naming it when no default)."""
    path = Path(path)
    if not path.is_file():
        if default is None:
            raise FileNotFoundError(f"{path} not found")
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is damaged ({exc}): rerun the step that wrote it") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
