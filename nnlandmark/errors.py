"""The errors a user can fix, kept apart from bugs.

Every command of the CLI prints a :class:`UserError` as ``error: <message>``
lines (one per problem, each naming the file or flag) and exits with code 2.
Any other exception is a bug in nnlandmark and keeps its traceback, so an
``except ValueError`` somewhere cannot hide one. The subclasses also derive
from the matching built-in error, so Python callers may catch either.

>>> try:
...     raise InvalidInput("--step-size: must be in (0, 1], got 3.0")
... except ValueError as e:
...     print(isinstance(e, UserError), e)
True --step-size: must be in (0, 1], got 3.0
"""
from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """A problem with the user's files, folders or flags; the message says which and why."""


class InvalidInput(UserError, ValueError):
    """A value, flag or file content that cannot be used."""


class DatasetError(InvalidInput):
    """Problems with a dataset or its files; one line per problem, each naming its file."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class MissingPath(UserError, FileNotFoundError):
    """A file or folder the command needs does not exist (or is not what it should be)."""


class OutputExists(UserError, FileExistsError):
    """The command would overwrite something the user did not ask it to replace."""


def check_writable(folder) -> None:
    """Refuse an output folder that cannot be created or written, without creating it
    (a refused command leaves no empty folder behind).

    >>> import tempfile
    >>> afile = Path(tempfile.mkdtemp()) / "a_file"
    >>> _ = afile.write_text("")
    >>> check_writable(afile / "out")
    Traceback (most recent call last):
    ...
    nnlandmark.errors.MissingPath: .../a_file/out: cannot be created, .../a_file is a file
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MissingPath(f"{folder}: cannot be created, {existing} is a file")
    probe = existing / f".nnlandmark_write_test_{os.getpid()}"
    try:  # a real write: os.access says yes to root even on a read-only mount
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise MissingPath(f"{folder}: output folder cannot be written ({e.strerror} in {existing})") from e


#: exit codes of the CLI
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
