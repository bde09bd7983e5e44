"""The project's user errors and their one-line messages, for libraries and commands alike.

* :class:`UserError`: an input problem the user can fix (a bad path, column, band or value), raised at the
  input boundary with a message naming what was wrong and what was expected. Commands print it as one line
  and exit 2 (:func:`common.cli.run_main`); the service answers it with a 4xx (``service.errors``).
* :class:`InputNotFoundError`: a file or folder the user named does not exist (also a ``FileNotFoundError``).
* :func:`one_line` and :func:`errors_message`: the single helpers that format messages, one line per
  problem, and many problems (for example every bad file of a folder) joined into one.

Libraries import these from here; :mod:`common.cli` re-exports them for the commands (and older code).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_ERRORS_SHOWN = 20


class UserError(ValueError):
    """An input problem the user can fix; its message names what was wrong and what was expected."""


class InputNotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``)."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def errors_message(errors: Sequence[str], where: str) -> str:
    """Many problems as one line: ``N bad file(s) in WHERE: e1; e2; ... and K more``."""
    shown = "; ".join(one_line(e) for e in errors[:MAX_ERRORS_SHOWN])
    more = f"; ... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
    return f"{len(errors)} bad file(s) in {where}: {shown}{more}"


__all__ = ["MAX_ERRORS_SHOWN", "InputNotFoundError", "UserError", "errors_message", "one_line"]
