"""MLflow tracking shared by every pipeline.

* Store: ``--tracking-uri`` when given, else ``$MLFLOW_TRACKING_URI``, else the SQLite backend
  ``sqlite:///mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (relative to the working
  directory). Open it with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
* **Who touches MLflow's global state:** only a command (``pipelines/*``), once, through
  :func:`setup_tracking`. Library code logs into the run the command opened and never calls
  ``mlflow.set_tracking_uri`` or ``mlflow.set_experiment``; loaders take the store they need as an
  argument (:func:`download_model`).
* :func:`tracked_run` starts a run in the store the command set up, logs the whole typed config
  (flattened params and ``config.json``), the git commit and code version, and marks the run
  ``FAILED`` when the block raises (``KILLED`` on Ctrl-C). Experiments it creates carry MLflow's
  ``mlflow.experimentKind`` tag for model training, so the UI opens on their runs table.
* :func:`log_fingerprint` logs a data set's fingerprint as params and as an MLflow dataset input
  (name, digest, source, rows), which the UI's Dataset column shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.cli import handle_sigterm, quiet_third_party
from common.errors import InputNotFoundError, UserError, one_line
from common.fingerprint import Fingerprint

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR}/mlflow.db"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
MAX_PARAM_LEN = 6000
#: MLflow 3's experiment-kind tag; this value makes the UI open an experiment on its runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the default SQLite store."""
    if uri:
        return uri
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return env
    return DEFAULT_TRACKING_URI


def _store_path(uri: str) -> Path | None:
    """The local path a store writes to: the SQLite file or a ``file:`` folder; ``None`` for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file:"):
        return Path(urlparse(uri).path)
    if "://" not in uri:
        return Path(uri)
    return None


def _writable(path: Path) -> bool:
    if not os.access(path, os.W_OK):
        return False
    if path.is_file():  # root passes os.access on files of a read-only mount only by mount flags; try it
        try:
            with open(path, "r+b"):
                return True
        except OSError:
            return False
    return True


def check_store_writable(uri: str) -> None:
    """Fail fast, before any work, when a local store cannot be written (MLflow itself retries for
    minutes on a read-only SQLite file before a SQLAlchemy traceback)."""
    path = _store_path(uri)
    if path is None:
        return
    folder = path.parent if path.suffix else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"tracking store {uri}: cannot create {folder} ({exc.strerror})") from None
    for p in (folder, path):
        if p.exists() and not _writable(p):
            raise UserError(f"tracking store {uri}: {p} is not writable (read-only); choose another --tracking-uri")


def setup_tracking(uri: str | None = None, *, verbose: bool = False) -> str:
    """Point MLflow at the store (for the whole process) and return its URI. Commands only.

    Checks that a local store is writable (one fast line instead of a minutes-long hang), makes
    SIGTERM end runs like Ctrl-C (:func:`common.cli.handle_sigterm`), and quiets third-party output
    (:func:`common.cli.quiet_third_party`: MLflow's artifact progress bars, warnings and log lines)
    unless ``verbose``.
    """
    quiet_third_party(verbose)
    handle_sigterm()
    resolved = resolve_tracking_uri(uri)
    check_store_writable(resolved)
    mlflow.set_tracking_uri(resolved)
    return resolved


def _default_artifact_root(uri: str) -> str | None:
    """Artifacts of the default SQLite store live under ``<db folder>/artifacts``."""
    if uri.startswith("sqlite:///"):
        db_path = Path(uri[len("sqlite:///") :]).resolve()
        return (db_path.parent / "artifacts").as_uri()
    return None


def ensure_experiment(name: str, tracking_uri: str | None = None) -> str:
    """Id of experiment ``name`` in the store (created if needed, artifacts beside a SQLite db).

    The experiment carries :data:`EXPERIMENT_KIND_TAG`; a store's global state is not changed.
    """
    uri = resolve_tracking_uri(tracking_uri) if tracking_uri else _current_uri()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(
            name, artifact_location=_default_artifact_root(uri), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def _current_uri() -> str:
    return mlflow.get_tracking_uri()


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
        return version("landslide-detect")
    except PackageNotFoundError:  # running from a source tree that is not installed
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
    data = config_to_dict(config)
    mlflow.log_params(flatten_params(data))
    mlflow.log_dict(data, artifact_name)
    return data


def _dataset(fp: Fingerprint, name: str) -> Any:
    """An MLflow dataset that records a fingerprint without the data: name, digest, source and size."""

    class FingerprintDataset(MetaDataset):
        """MetaDataset whose profile holds the row and column counts of the fingerprint."""

        @property
        def profile(self) -> Any:
            return {"num_rows": fp.rows, "num_elements_per_row": fp.columns}

        def to_dict(self) -> dict[str, str]:
            out = super().to_dict()
            out["profile"] = json.dumps(self.profile)
            return out

    source = CodeDatasetSource(tags={"source": fp.source or "unknown"})
    return FingerprintDataset(source=source, name=name, digest=fp.sha256[:16])


def log_fingerprint(fp: Fingerprint, prefix: str = "data", *, context: str = "training") -> None:
    """Log a data fingerprint: params ``<prefix>_sha256``/``_rows``/``_columns``/``_source`` and an
    MLflow dataset input (name ``prefix``, digest, source, rows) shown in the UI's Dataset column."""
    mlflow.log_params({k: str(v) for k, v in fp.as_params(prefix).items()})
    mlflow.log_input(_dataset(fp, prefix), context=context)


def default_run_name(experiment: str, hint: str | None = None) -> str:
    """``<experiment>[-<hint>]-<YYYYmmdd-HHMMSS>-<4 hex>`` (hint: the model, say): readable, unique
    (the suffix comes from the OS, not from the seeded global RNG MLflow would draw its names from)."""
    parts = [experiment, hint] if hint else [experiment]
    return "-".join([*parts, time.strftime("%Y%m%d-%H%M%S"), secrets.token_hex(2)])


#: Run tags the project sets: which pipeline made a run, and the sha256 of the model it logged.
KIND_TAG = "landslide.kind"
MODEL_DIGEST_TAG = "landslide.model_digest"
RESUMED_TAG = "landslide.resumed"


def set_run_kind(kind: str) -> None:
    """Tag the active run with the pipeline that made it (``tabular``, ``imagery``, ``fusion``, ...)."""
    mlflow.set_tag(KIND_TAG, kind)


@contextlib.contextmanager
def tracked_run(
    experiment: str,
    config: Any | None = None,
    *,
    run_name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    name_hint: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Any]:
    """Start an MLflow run in the store the command set up; log ``config``, git commit and code version.

    The run ends ``FINISHED`` when the block completes, ``FAILED`` when it raises and
    ``KILLED`` on ``KeyboardInterrupt`` or SIGTERM; the exception propagates. Yields the active run.
    A nested run goes into its parent's experiment. ``resume_run_id`` continues that run (a run
    killed earlier): its status goes back to RUNNING, its parameters stay, its metric histories
    continue, and the tag ``landslide.resumed`` counts the resumptions.
    """
    if resume_run_id is not None:
        previous = MlflowClient().get_run(resume_run_id)
        count = int(previous.data.tags.get(RESUMED_TAG, "0")) + 1
        run = mlflow.start_run(run_id=resume_run_id, nested=nested, tags={RESUMED_TAG: str(count)})
        config = None  # parameters are immutable in MLflow and the resume check made sure they did not change
    else:
        all_tags = {"git_commit": git_commit(), "code_version": code_version(), "entry_point": experiment}
        all_tags.update(tags or {})
        name = run_name or default_run_name(experiment, name_hint)
        kwargs: dict[str, Any] = {"run_name": name, "nested": nested, "tags": all_tags}
        parent = mlflow.active_run() if nested else None
        kwargs["experiment_id"] = parent.info.experiment_id if parent is not None else ensure_experiment(experiment)
        run = mlflow.start_run(**kwargs)
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


def log_artifact_file(path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Log one local file to the active run."""
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def normalize_model_uri(uri: str, default_artifact: str) -> str:
    """The MLflow URI for ``uri``: a bare run id or ``runs:/<id>`` gains ``/<default_artifact>``.

    ``runs:/<id>/<path>``, ``models:/...`` and other scheme URIs pass through unchanged.
    """
    text = str(uri).strip()
    if RUN_ID_PATTERN.match(text):
        return f"runs:/{text}/{default_artifact}"
    if text.startswith("runs:/") and text.rstrip("/").count("/") == 1:
        return f"{text.rstrip('/')}/{default_artifact}"
    return text


def download_model(
    uri: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    default_artifact: str,
    flag: str = "--model",
    what: str = "model",
    dst_path: str | os.PathLike[str] | None = None,
) -> Path:
    """A local path for a model reference, downloading it from MLflow when needed.

    ``uri`` is a local file or folder, a bare run id, ``runs:/<run_id>[/<path>]`` (the bare forms
    gain ``/<default_artifact>``), ``models:/<name>/<version>`` or any MLflow artifact URI. MLflow
    URIs are resolved against ``tracking_uri`` (default: the command's store) without changing
    MLflow's global state. Errors name ``flag``, the URI and ``what`` was looked for, on one line.
    """
    text = str(uri).strip()
    local = Path(text)
    if local.exists():
        return local
    norm = normalize_model_uri(text, default_artifact)
    if ":/" not in norm:
        raise InputNotFoundError(
            f"{flag} {text}: {what} not found (no such folder or file, and not an MLflow URI: "
            "expected runs:/<run_id>, a run id or models:/...)"
        )
    store = resolve_tracking_uri(tracking_uri) if tracking_uri else _current_uri()
    dst = str(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="landslide-model-")
    try:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=norm, dst_path=dst, tracking_uri=store, registry_uri=store)
        )
    except (MlflowException, OSError) as exc:
        raise UserError(
            f"{flag} {text}: cannot download the {what} {norm} from {store} ({one_line(exc)[:200]})"
        ) from None
