"""Command-line conventions shared by every ``python -m pipelines.*`` entry point.

User mistakes (bad paths, bad columns, bad values) are raised by the libraries as
``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError`` or ``ValueError`` (or
:class:`UserError`) with a message naming the file, column or value. :func:`run_main`
turns them into one line on stderr and exit status 2, without a traceback. Anything
else is a bug and keeps its traceback. Set ``LANDSLIDE_DEBUG=1`` to see tracebacks for
user errors too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

USER_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
)

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """An input problem the user can fix; its message names what was wrong and what was expected."""


def format_user_error(exc: BaseException) -> str:
    """One line describing ``exc`` for the terminal."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename}"
    else:
        msg = str(exc) or exc.__class__.__name__
        if isinstance(exc, KeyError) and msg.startswith("'"):
            msg = msg.strip("'")
    return " ".join(msg.split())


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map user errors to ``error: ...`` and exit status 2."""
    try:
        code = main(argv)
    except USER_ERRORS as exc:
        if os.environ.get("LANDSLIDE_DEBUG"):
            raise
        print(f"error: {format_user_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def add_common_args(parser: argparse.ArgumentParser, *, default_seed: int = 42) -> None:
    """Flags every command takes: ``--seed``, ``--experiment``, ``--run-name``, ``--tracking-uri``."""
    parser.add_argument("--seed", type=int, default=default_seed, help="random seed (default %(default)s)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)",
    )


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def unit_float(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value
