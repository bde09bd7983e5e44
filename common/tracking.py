"""MLflow tracking shared by every pipeline.

* Store: ``$MLFLOW_TRACKING_URI`` when set, else the SQLite backend ``sqlite:///mlruns/mlflow.db``
  with artifacts under ``mlruns/artifacts`` (relative to the working directory). Open it with
  ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
* :func:`tracked_run` starts a run, logs the whole typed config (flattened params and
  ``config.json``), the git commit and code version, and marks the run ``FAILED`` when the
  block raises (``KILLED`` on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from common.fingerprint import Fingerprint

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR}/mlflow.db"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
MAX_PARAM_LEN = 6000

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore", module="mlflow")
    import logging

    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the default SQLite store."""
    if uri:
        return uri
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return env
    return DEFAULT_TRACKING_URI


def setup_tracking(uri: str | None = None) -> str:
    """Point MLflow at the store and return its URI; creates ``mlruns/`` for the default store."""
    _quiet_mlflow()
    import mlflow

    resolved = resolve_tracking_uri(uri)
    if resolved.startswith("sqlite:///"):
        db_path = Path(resolved[len("sqlite:///") :])
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(resolved)
    return resolved


def _default_artifact_root(uri: str) -> str | None:
    """Artifacts of the default SQLite store live under ``<db folder>/artifacts``."""
    if uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///") :]).resolve()
        return (db_path.parent / "artifacts").as_uri()
    return None


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Create the experiment if needed (artifacts beside the SQLite db) and return its id."""
    import mlflow

    resolved = setup_tracking(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        exp_id = mlflow.create_experiment(name, artifact_location=_default_artifact_root(resolved))
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    """The project's git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    """The installed package version of this project."""
    try:
        from importlib.metadata import version

        return version("landslide-detect")
    except Exception:  # noqa: BLE001 - not installed (running from a source tree)
        return "0+source"


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) or mapping as a plain JSON-able dict."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise TypeError(f"config must be a dataclass or a mapping, got {type(config).__name__}")
    return json.loads(json.dumps(data, default=str))


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts to ``a.b`` keys with string values short enough for MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[name] = text[:MAX_PARAM_LEN]
    return out


def log_config(config: Any, artifact_name: str = "config.json") -> dict[str, Any]:
    """Log a typed config whole: every field as a param and the JSON as an artifact."""
    import mlflow

    data = config_to_dict(config)
    mlflow.log_params(flatten_params(data))
    mlflow.log_dict(data, artifact_name)
    return data


def log_fingerprint(fp: Fingerprint, prefix: str = "data") -> None:
    """Log a data fingerprint as params ``<prefix>_sha256``, ``_rows``, ``_columns``, ``_source``."""
    import mlflow

    mlflow.log_params({k: str(v) for k, v in fp.as_params(prefix).items()})


@contextlib.contextmanager
def tracked_run(
    experiment: str,
    config: Any | None = None,
    *,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run that logs ``config``, the git commit and code version.

    The run ends ``FINISHED`` when the block completes, ``FAILED`` when it raises and
    ``KILLED`` on ``KeyboardInterrupt``; the exception propagates. Yields the active run.
    """
    import mlflow

    if not nested:
        ensure_experiment(experiment, tracking_uri)
    all_tags = {"git_commit": git_commit(), "code_version": code_version(), "entry_point": experiment}
    all_tags.update(tags or {})
    run = mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags)
    try:
        if config is not None:
            log_config(config)
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
