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
* **Killed runs.** Every run carries the tags ``landslide.pid`` and ``landslide.host`` of the process that
  runs it. A run left ``RUNNING`` by a process that is gone (SIGKILL, power loss) is *orphaned*; a new
  top-level run marks the orphans of its own experiment (its command) ``KILLED`` before it starts
  (:func:`mark_orphaned_runs`), and ``python -m pipelines.clean`` does so for the whole store.
* :func:`log_fingerprint` logs a data set's fingerprint as params and as an MLflow dataset input
  (name, digest, source, rows), which the UI's Dataset column shows. The input is named after the data
  (:func:`data_name`: ``lsat_cells``, ``sentinel2_l2a_cogs_29RKH``), and a path inside a temporary folder
  the job made is logged as ``temporary copy of <name>``, never as the throw-away path.
* Runs are named ``<command>[-<hint>]-<data>-<YYYYmmdd-HHMMSS>-<4 hex>`` (:func:`default_run_name`), e.g.
  ``train_tabular-lsat_cells-20240601-120000-1a2b``; :func:`runs_table_url` is the MLflow UI's link to an
  experiment's runs table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
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

from common.atomic import host_tag, pid_alive
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


_TEMP_PART = re.compile(r"^(tmp|[\w.]+-)[a-z0-9_]{8}$")  # tempfile.mkdtemp's names: tmpXXXXXXXX, <prefix>XXXXXXXX


def clean_source(source: str) -> str:
    """``source`` unless it is a path inside a temporary folder a job made: then ``temporary copy of <name>``."""
    text = str(source or "")
    try:
        path = Path(text)
        tmp = Path(tempfile.gettempdir()).resolve()
        if path.is_absolute() and path.resolve().is_relative_to(tmp):
            parts = path.resolve().relative_to(tmp).parts
            if any(_TEMP_PART.match(p) for p in parts[:-1]) or (len(parts) == 1 and _TEMP_PART.match(parts[0])):
                return f"temporary copy of {path.name}"
    except (OSError, ValueError):
        pass
    return text


def data_name(source: str | None, default: str = "data") -> str:
    """A short name for a data source: a file's stem or a folder's name (``cells/`` -> ``cells``,
    ``/data/lsat.csv`` -> ``lsat``), a URI's last part, else the source's leading word (``paired(n=800)`` ->
    ``paired``); ``default`` when empty. Only letters, digits, ``._-``; at most 48 characters."""
    text = clean_source(source or "").removeprefix("temporary copy of ").strip()
    if not text:
        return default
    if "/" in text or "\\" in text or Path(text).suffix:
        last = [p for p in re.split(r"[/\\]", text.rstrip("/\\")) if p and not p.endswith(":")]
        if last:
            stem = last[-1]
            for ext in (".gz", ".zip", ".json", ".csv", ".tsv", ".parquet", ".feather", ".arrow", ".h5", ".tif"):
                stem = stem.removesuffix(ext)
            text = stem or text
    word = re.match(r"[A-Za-z][\w.]*", text)
    name = word.group(0) if word and not re.fullmatch(r"[\w.-]+", text) else text
    name = re.sub(r"[^\w.-]+", "-", name).strip("-.")[:48]
    return name or default


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

    source = CodeDatasetSource(tags={"source": clean_source(fp.source) or "unknown"})
    return FingerprintDataset(source=source, name=name, digest=fp.sha256[:16])


def log_fingerprint(fp: Fingerprint, prefix: str = "data", *, context: str = "training") -> None:
    """Log a data fingerprint: params ``<prefix>_sha256``/``_rows``/``_columns``/``_source`` and an
    MLflow dataset input (digest, source, rows) shown in the UI's Dataset column, named after the data
    (:func:`data_name`; ``<name>-<split>`` for a prefix ``data_<split>``, ``<name>-<prefix>`` for others)."""
    fp = dataclasses.replace(fp, source=clean_source(fp.source))
    mlflow.log_params({k: str(v) for k, v in fp.as_params(prefix).items()})
    name = data_name(fp.source, default=prefix)
    if prefix != "data" and name != prefix:
        name = f"{name}-{prefix.removeprefix('data_')}"
    mlflow.log_input(_dataset(fp, name), context=context)


def command_name(default: str) -> str:
    """The running command (``train_tabular`` for ``python -m pipelines.train_tabular``), else ``default``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", "") or ""
    return name.split(".", 1)[1] if name.startswith("pipelines.") else default


_DATA_FIELDS = ("data", "scene", "regions", "input", "items")


def config_data_name(config: Any) -> str | None:
    """What a command ran on, from its config: :func:`data_name` of its ``data``/``scene``/``regions``/
    ``input``/``items`` field, ``synthetic`` when a ``data`` field is empty (the built-in data), else None."""
    for attr in _DATA_FIELDS:
        if hasattr(config, attr):
            value = getattr(config, attr)
            if value:
                return data_name(str(value))
            if attr == "data":
                return "synthetic"
    return None


def default_run_name(experiment: str, hint: str | None = None, data: str | None = None) -> str:
    """``<command>[-<hint>]-[<data>-]<YYYYmmdd-HHMMSS>-<4 hex>`` (hint: the model, say; data: what it ran
    on; command: the ``pipelines`` module running, else ``experiment``): readable, unique (the suffix comes
    from the OS, not from the seeded global RNG MLflow would draw its names from)."""
    parts = [command_name(experiment), *(p for p in (hint, data) if p)]
    return "-".join([*dict.fromkeys(parts), time.strftime("%Y%m%d-%H%M%S"), secrets.token_hex(2)])


def runs_table_url(experiment: str, tracking_uri: str | None = None, ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's link to ``experiment``'s runs table (``mlflow ui`` serves ``ui``). MLflow 3's UI keeps
    its GenAI / model-training toggle in the browser's local storage (GenAI in a fresh browser) and never
    reconciles it with the experiment's ``mlflow.experimentKind`` tag (3.17 and 3.18 alike); the
    ``workflowType=machine_learning`` query parameter, which its toggle reads first, opens the model-training
    view whatever the browser stored."""
    try:
        exp = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    except MlflowException:
        exp = None
    query = "?workflowType=machine_learning"
    return f"{ui}/#/experiments/{exp.experiment_id}/runs{query}" if exp is not None else f"{ui}/#/experiments{query}"


#: Run tags the project sets: which pipeline made a run, and the sha256 of the model it logged.
KIND_TAG = "landslide.kind"
MODEL_DIGEST_TAG = "landslide.model_digest"
RESUMED_TAG = "landslide.resumed"
PID_TAG = "landslide.pid"
HOST_TAG = "landslide.host"


def process_tags() -> dict[str, str]:
    """The tags naming the process that runs a run: its pid and this host (as in staging names)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: host_tag()}


def orphaned_runs(client: MlflowClient, experiment_ids: list[str]) -> list[Any]:
    """Runs of ``experiment_ids`` still ``RUNNING`` whose process (``landslide.pid`` on this host) is gone.

    Runs of another host, or without the pid tag (older runs, other tools), are never listed."""
    if not experiment_ids:
        return []
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host_tag()}'",
        max_results=1000,
    )
    out = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not pid_alive(int(pid)):
            out.append(run)
    return out


def mark_orphaned_runs(
    experiment_ids: list[str], *, tracking_uri: str | None = None, dry_run: bool = False
) -> list[Any]:
    """Mark the :func:`orphaned_runs` of ``experiment_ids`` ``KILLED`` (unless ``dry_run``); returns them."""
    uri = resolve_tracking_uri(tracking_uri) if tracking_uri else _current_uri()
    client = MlflowClient(uri)
    found = orphaned_runs(client, experiment_ids)
    if not dry_run:
        for run in found:
            client.set_terminated(run.info.run_id, status="KILLED", end_time=int(time.time() * 1000))
    return found


def set_run_kind(kind: str) -> None:
    """Tag the active run with the pipeline that made it (``tabular``, ``imagery``, ``fusion``, ...)."""
    mlflow.set_tag(KIND_TAG, kind)


def _mark_orphans_quietly(experiment_id: str) -> None:
    """:func:`mark_orphaned_runs` for one experiment, before a run starts; a store error here never stops
    the command (the run itself would report it)."""
    with contextlib.suppress(MlflowException):
        mark_orphaned_runs([experiment_id])


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
    options: Any | None = None,
) -> Iterator[Any]:
    """Start an MLflow run in the store the command set up; log ``config``, git commit and code version.

    The run ends ``FINISHED`` when the block completes, ``FAILED`` when it raises and
    ``KILLED`` on ``KeyboardInterrupt`` or SIGTERM; the exception propagates. Yields the active run.
    A nested run goes into its parent's experiment. ``resume_run_id`` continues that run (a run
    killed earlier): its status goes back to RUNNING, its parameters stay, its metric histories
    continue, and the tag ``landslide.resumed`` counts the resumptions. A top-level run first marks the
    orphaned runs of its experiment ``KILLED`` (:func:`mark_orphaned_runs`). ``options``: the command's own
    options (``pipelines._command``), logged as ``config.json`` so that ``--config`` re-runs them; ``config``
    then goes to the params and ``library_config.json``.
    """
    if resume_run_id is not None:
        previous = MlflowClient().get_run(resume_run_id)
        count = int(previous.data.tags.get(RESUMED_TAG, "0")) + 1
        if not nested:
            _mark_orphans_quietly(previous.info.experiment_id)
        run = mlflow.start_run(run_id=resume_run_id, nested=nested, tags={RESUMED_TAG: str(count), **process_tags()})
        config = None  # parameters are immutable in MLflow and the resume check made sure they did not change
    else:
        all_tags = {"git_commit": git_commit(), "code_version": code_version(), "entry_point": experiment}
        all_tags.update(process_tags())
        all_tags.update(tags or {})
        name = run_name or default_run_name(experiment, name_hint, config_data_name(config))
        kwargs: dict[str, Any] = {"run_name": name, "nested": nested, "tags": all_tags}
        parent = mlflow.active_run() if nested else None
        kwargs["experiment_id"] = parent.info.experiment_id if parent is not None else ensure_experiment(experiment)
        if parent is None:
            _mark_orphans_quietly(kwargs["experiment_id"])
        run = mlflow.start_run(**kwargs)
    try:
        if config is not None:
            log_config(config, "config.json" if options is None else "library_config.json")
        if options is not None and resume_run_id is None:
            mlflow.log_dict(config_to_dict(options), "config.json")
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
