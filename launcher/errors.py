"""One way to turn library errors into a clear CLI message and a non-zero exit."""

import contextlib
import sys

import typer


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
