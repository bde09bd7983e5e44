"""Command-line conventions shared by every ``python -m pipelines.*`` entry point.

Errors, by who can fix them:

* **User mistakes** (a bad path, column, band or value) are raised at the input boundaries as
  :class:`UserError` (or :class:`InputNotFoundError`, which is also a ``FileNotFoundError``) with a
  message naming the file, column or value and what was expected. :func:`run_main` prints them as
  one line, ``error: ...``, and returns exit status 2, without a traceback.
* **The machine** refusing a path (a missing, unreadable or read-only file or folder, a full disk)
  surfaces as an ``OSError`` that names the path; :func:`run_main` treats it like a user error.
* **Anything else** is a bug in this project or a library: it keeps its traceback and exit status 1,
  even when it is a ``ValueError``.

Set ``LANDSLIDE_DEBUG=1`` to see the traceback of user errors too.

:class:`UserError`, :class:`InputNotFoundError`, :func:`one_line` and :func:`errors_message` live in
:mod:`common.errors` (libraries import them from there) and are re-exported here.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import MAX_ERRORS_SHOWN, InputNotFoundError, UserError, errors_message, one_line  # noqa: F401 - re-exported
from common.options import arg

EXIT_USER_ERROR = 2
EXIT_BUG = 1
ENV_DEBUG = "LANDSLIDE_DEBUG"

#: ``OSError`` numbers that describe the user's paths or machine, not a bug.
PATH_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EROFS, errno.ENOSPC, errno.EEXIST}
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: runs end KILLED, checkpoints stay, exit status 143."""


EXIT_TERMINATED = 143


def handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (a command calls this once)."""

    def _raise(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum}")

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (e.g. a command called from a server's worker)
        pass


def is_user_error(exc: BaseException) -> bool:
    """True for :class:`UserError` and for ``OSError``s about a named path (see the module docstring)."""
    if isinstance(exc, UserError):
        return True
    return isinstance(exc, OSError) and bool(exc.filename) and exc.errno in PATH_ERRNOS


def format_user_error(exc: BaseException) -> str:
    """One line describing ``exc`` for the terminal."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.filename and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename}"
    else:
        msg = str(exc) or exc.__class__.__name__
    return one_line(msg)


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``: user errors become ``error: ...`` and exit status 2; bugs keep their traceback."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, its usage and message already printed)
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return EXIT_BUG
    except Terminated:
        print("terminated (SIGTERM): the MLflow run is marked KILLED; continue with --resume", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not is_user_error(exc) or os.environ.get(ENV_DEBUG):
            raise
        print(f"error: {format_user_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return int(code or 0)


@dataclass
class RunOptions:
    """run (MLflow tracking and output)

    The options every command takes (the ``run`` group of its config).
    """

    seed: int = arg("random seed (default %(default)s)", default=42)
    experiment: str | None = arg("MLflow experiment name (default: the command's own)", default=None)
    run_name: str | None = arg("MLflow run name (default: command, data and time)", default=None)
    tracking_uri: str | None = arg(
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)", default=None
    )
    verbose: bool = arg(f"show third-party progress bars and warnings (also ${ENV_DEBUG}=1)", default=False)
    json: bool = arg("end with the summary as one JSON object on stdout", default=False)


def progress_printer(to_stderr: bool) -> Callable[[str], None]:
    """Where a command's progress lines go: stdout, or stderr when stdout is kept for ``--json``."""
    stream = sys.stderr if to_stderr else sys.stdout
    return lambda line: print(line, file=stream, flush=True)


def print_summary(summary: Mapping[str, Any], *, as_json: bool = False, title: str = "") -> None:
    """The last thing a command prints: its run id, what it made (model/output URIs) and key metrics.

    One ``key: value`` line each, or with ``as_json`` one JSON object (for scripts).
    """
    if as_json:
        print(json.dumps(dict(summary), default=str, sort_keys=False), flush=True)
        return
    if title:
        print(title, flush=True)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif isinstance(value, list | tuple):
            value = ", ".join(map(str, value))
        elif isinstance(value, Mapping):
            value = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        print(f"{key}: {value}", flush=True)


def quiet_third_party(verbose: bool = False) -> None:
    """Keep the command's output its own: no third-party warnings, log lines or progress bars.

    Called once by each command (never by library code) unless ``--verbose`` or ``LANDSLIDE_DEBUG``
    asks for them. Warnings the project raises itself (``UserWarning`` from ``common``,
    ``tabular``, ``imagery``, ``fusion``) still print.
    """
    if verbose or os.environ.get(ENV_DEBUG):
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore")
    for pkg in ("common", "tabular", "imagery", "fusion", "pipelines"):
        warnings.filterwarnings("default", category=UserWarning, module=rf"{pkg}(\.|$)")
    for name in ("mlflow", "alembic", "alembic.runtime.migration", "torch", "lightgbm", "shap", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


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


def csv_list(text: str) -> list[str]:
    """argparse type: a comma-separated list (empty items dropped)."""
    return [t.strip() for t in text.split(",") if t.strip()]
