"""One way to turn library errors into a clear CLI message and a non-zero exit."""

import contextlib
import errno
import sys
from pathlib import Path

import typer

from demakeup_dist.atomic import TMP_MARK


class UserError(Exception):
    """A problem the user can fix (bad path, bad option, bad data). The message says what to do."""


@contextlib.contextmanager
def user_errors():
    """Print a UserError (or ValueError / FileNotFoundError from the library) as one clean message, exit 2."""
    try:
        yield
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


_STORAGE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied"}


def storage_problem(exc: BaseException, target: Path, retry: str) -> str | None:
    """One line when `exc` means `target` cannot be written (full, read-only, no permission), ending with
    `retry` (what to do); None for anything else. Libraries wrap the OS error (torch: RuntimeError,
    safetensors: SafetensorError), so their messages are recognised too."""
    why = _STORAGE.get(getattr(exc, "errno", None))
    text = str(exc)
    if why is None and ("No space left" in text or "os error 28" in text):
        why = _STORAGE[errno.ENOSPC]
    if why is None:
        return None
    where = getattr(exc, "filename", None) or target
    if TMP_MARK in str(where):  # a temporary that the failed write removed again: name what it was for
        where = target
    return f"cannot write to {where}: {why}. {retry}"


@contextlib.contextmanager
def storage_errors(target: Path, retry: str):
    """A full disk or a read-only / forbidden `target` as `storage_problem`'s one line, exit 2."""
    try:
        yield
    except Exception as exc:
        if (problem := storage_problem(exc, target, retry)) is None:
            raise
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        sys.exit(2)
