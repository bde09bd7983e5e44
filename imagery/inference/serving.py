"""Log a trained segmenter to MLflow and load it back without unpickling anything.

What one training run stores (``log_segmenter``):

* ``mlflow.pytorch.log_model(...)`` under the name ``model``: the PyTorch flavour (signature, input
  example, explicit ``pip_requirements``) for the MLflow UI and pyfunc users. Its pyfunc takes the
  *preprocessed* input ``(N, C, 128, 128)`` float32 and returns the landslide probability ``(N, 128, 128)``.
  This project never loads that copy (it may hold pickled or exported code).
* Run artifacts ``segmenter/state_dict.pt`` (tensors only) and ``segmenter/model_meta.json`` (model
  name and constructor kwargs, channel set, band order, normaliser statistics, decision threshold,
  head, TTA/vote/morphology defaults). The same two files also travel inside the logged model
  (``extra_files``), so a ``models:/...`` URI works too.

``load_segmenter(uri)`` rebuilds the network by name from ``imagery.models`` and reads the weights
with ``torch.load(..., weights_only=True)``. ``Segmenter.predict`` takes raw L4S patches and does the
cleaning, feature engineering, normalisation, TTA, thresholding and morphology itself.
"""

from __future__ import annotations

import copy
import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from torch import nn

from common.atomic import atomic_path, atomic_write
from common.cli import InputNotFoundError, UserError
from common.tracking import MODEL_DIGEST_TAG, download_model
from imagery.inference.segmenter import Segmenter, SegmenterMeta, state_digest
from imagery.models import create_model, main_output_only

META_NAME = "model_meta.json"
STATE_NAME = "state_dict.pt"
SEGMENTER_ARTIFACT_DIR = "segmenter"


class _ProbabilityExport(nn.Module):
    """What the logged MLflow PyTorch model computes: landslide probability ``(N, H, W)`` of preprocessed input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with main_output_only():
            return torch.softmax(self.net(x)["out"], dim=1)[:, 1]


def pip_requirements() -> list[str]:
    """Pinned requirements stored with the logged model (the versions installed now)."""
    reqs = []
    for pkg in ("torch", "mlflow", "numpy", "h5py", "opencv-python-headless", "scipy"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


def save_segmenter_files(model: nn.Module, meta: SegmenterMeta, folder: str | Path) -> tuple[Path, Path]:
    """Write ``state_dict.pt`` and ``model_meta.json`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path, meta_path = folder / STATE_NAME, folder / META_NAME
    with atomic_path(state_path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    with atomic_write(meta_path) as fh:
        json.dump(meta.to_dict(), fh, indent=2)
    return state_path, meta_path


def log_segmenter(
    model: nn.Module,
    meta: SegmenterMeta,
    *,
    input_example: np.ndarray | None = None,
    log_flavour: bool = True,
) -> str:
    """Log ``model`` + ``meta`` to the active MLflow run; returns the URI ``load_segmenter`` takes.

    ``input_example``: one preprocessed input ``(1, C, H, W)`` float32 (zeros of the patch size when ``None``).
    ``log_flavour=False`` skips ``mlflow.pytorch.log_model`` (the state dict and metadata are always logged).
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_segmenter needs an active MLflow run")
    model = model.eval()
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory() as tmp:
        state_path, meta_path = save_segmenter_files(model, meta, tmp)
        mlflow.log_artifacts(tmp, artifact_path=SEGMENTER_ARTIFACT_DIR)
        mlflow.set_tag(MODEL_DIGEST_TAG, state_digest(model))
        if log_flavour:
            cpu_model = _ProbabilityExport(copy.deepcopy(model).cpu().float()).eval()
            if input_example is None:
                input_example = np.zeros((1, meta.channel_set, meta.patch_size, meta.patch_size), np.float32)
            example = np.asarray(input_example, dtype=np.float32)
            with torch.no_grad():
                example_out = cpu_model(torch.from_numpy(example)).numpy()
            mlflow.pytorch.log_model(
                cpu_model,
                name="model",
                signature=infer_signature(example, example_out),
                input_example=example,
                pip_requirements=pip_requirements(),
                extra_files=[str(state_path), str(meta_path)],
            )
    model.to(device)
    return f"runs:/{run.info.run_id}/{SEGMENTER_ARTIFACT_DIR}"


def _segmenter_folder(uri: str, tracking_uri: str | None, dst: str, flag: str) -> Path:
    """A local folder holding ``model_meta.json`` for ``uri`` (see :func:`common.tracking.download_model`)."""
    local = download_model(
        uri,
        tracking_uri=tracking_uri,
        default_artifact=SEGMENTER_ARTIFACT_DIR,
        flag=flag,
        what="segmenter",
        dst_path=dst,
    )
    folder = local if local.is_dir() else local.parent
    hits = [folder] if (folder / META_NAME).is_file() else sorted(p.parent for p in folder.rglob(META_NAME))
    if not hits:
        raise UserError(f"{flag} {uri}: no {META_NAME} found; expected a segmenter logged by pipelines.train_imagery")
    return hits[0]


def load_segmenter(
    uri: str,
    device: str | torch.device = "auto",
    *,
    tracking_uri: str | None = None,
    flag: str = "--model",
    runtime: str = "torch",
    workload: int | None = None,
) -> Segmenter:
    """Rebuild the segmenter logged at ``uri`` (``runs:/<run_id>[/segmenter]``, a run id, ``models:/...``, a
    local folder, or an ``.onnx`` file from ``pipelines.export_imagery``), resolving MLflow URIs against
    ``tracking_uri`` (default: the command's store); ``flag`` names the command-line flag in error messages.

    The network is created by name (``imagery.models.create_model``) and its weights are read with
    ``torch.load(weights_only=True)``: nothing is unpickled.

    ``runtime``: ``"torch"`` (the default for library callers) is torch eager fp32; any other engine spec
    (``"auto"``, ``"onnx"``, ``"torch:bf16"``, ``"onnx:int8"``, see :func:`imagery.inference.engine.engine_spec`)
    runs the network on the path it names, or on the path measured fastest on this machine for ``"auto"``
    (:mod:`imagery.inference.engine`; ``seg.engine`` says which). An ``.onnx`` file always runs on ONNX Runtime.
    ``workload``: the patches the caller will run, where known: a long run also tries ``torch.compile``.
    """
    from imagery.inference import engine  # noqa: PLC0415 - engine imports serving's neighbours lazily

    rt, precision = engine.parse_spec(runtime)
    engine.path_for(rt, precision)  # a one-line error for a bad --runtime/--precision before any download
    if str(uri).endswith(".onnx"):
        from imagery.inference import onnx as onnx_rt  # noqa: PLC0415 - onnxruntime loads only for ONNX models

        path = download_model(uri, tracking_uri=tracking_uri, default_artifact="model.onnx", flag=flag)
        return onnx_rt.load_onnx_segmenter(path)
    if runtime != "torch":
        if rt == "onnx":
            device = "cpu"
        seg = load_segmenter(uri, device, tracking_uri=tracking_uri, flag=flag)
        return engine.apply_engine(seg, runtime, workload=workload)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _segmenter_folder(str(uri), tracking_uri, tmp, flag)
        meta_path, state_path = folder / META_NAME, folder / STATE_NAME
        try:
            meta = SegmenterMeta.from_dict(json.loads(meta_path.read_text(encoding="utf-8")), str(meta_path))
        except json.JSONDecodeError as exc:
            raise UserError(f"{meta_path}: not valid JSON ({exc.msg})") from None
        if not state_path.is_file():
            raise InputNotFoundError(f"{state_path}: file not found (the segmenter's weights)")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt or foreign file: torch raises many types
            raise UserError(f"{state_path}: not a readable state dict ({exc.__class__.__name__})") from None
    model = create_model(meta.model_name, **meta.model_kwargs)
    model.load_state_dict(state, strict=True)
    return Segmenter(model, meta, device)


__all__ = [
    "META_NAME",
    "STATE_NAME",
    "load_segmenter",
    "log_segmenter",
    "pip_requirements",
    "save_segmenter_files",
]
