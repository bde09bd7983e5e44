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

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write

META_NAME = "model_meta.json"
STATE_NAME = "state_dict.pt"
SEGMENTER_ARTIFACT_DIR = "segmenter"
META_FORMAT = 1


@dataclass
class SegmenterMeta:
    """Everything besides the weights that is needed to use a trained segmenter.

    ``model_kwargs`` are passed to ``imagery.models.create_model(model_name, **model_kwargs)``;
    ``normalizer`` is ``Normalizer.to_dict()`` or ``None`` (no normalisation); ``threshold`` is the
    landslide-probability cut (landslide iff p > threshold); ``band_order`` the 14 raw input bands.
    """

    model_name: str
    model_kwargs: dict[str, Any]
    channel_set: int
    threshold: float = 0.5
    normalizer: dict[str, Any] | None = None
    band_order: list[str] = field(default_factory=list)
    head: str = "multires"
    tta: str = "none"
    vote: bool = False
    morphology: str = "none"
    patch_size: int = 128
    format_version: int = META_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_meta.json") -> SegmenterMeta:
        required = ("model_name", "model_kwargs", "channel_set")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{source}: missing keys {missing}; expected a segmenter model_meta.json")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Segmenter:
    """A trained network plus its preprocessing and post-processing.

    Attributes: ``model`` (eval mode, on ``device``), ``meta``, ``threshold``, ``channel_set``.
    """

    def __init__(self, model: nn.Module, meta: SegmenterMeta, device: str | torch.device = "auto",
                 channels_last: bool = True) -> None:
        from imagery.train import Preprocessor, resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        # channels-last convolutions are the fast path on CPU (oneDNN) and GPU alike (benchmarks/)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.meta = meta
        normalizer = None
        if meta.normalizer:
            from imagery.normalize import Normalizer

            normalizer = Normalizer.from_dict(meta.normalizer)
        self.preprocess = Preprocessor(meta.channel_set, normalizer)

    @property
    def threshold(self) -> float:
        return float(self.meta.threshold)

    @property
    def channel_set(self) -> int:
        return int(self.meta.channel_set)

    @torch.inference_mode()
    def predict(
        self,
        images: np.ndarray | torch.Tensor,
        batch_size: int = 16,
        tta: str | None = None,
        vote: bool | None = None,
        morphology: str | None = None,
        threshold: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Segment raw L4S patches.

        Args:
            images: ``(N, 14, H, W)`` (or one ``(14, H, W)``) raw L4S values, bands in ``meta.band_order``.
            batch_size: patches per forward pass.
            tta, vote, morphology, threshold: override the stored defaults (``None`` = stored).

        Returns:
            ``prob`` ``(N, H, W)`` float32 landslide probability, ``mask`` ``(N, H, W)`` uint8
            (``prob > threshold``, then the morphology), ``patch_prob`` ``(N,)`` float32.
        """
        from imagery.postprocess import apply_threshold
        from imagery.postprocess import morphology as morph

        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 14:
            raise ValueError(f"Segmenter.predict: images have shape {tuple(x.shape)}, expected (N, 14, H, W) raw L4S bands")
        tta = self.meta.tta if tta is None else tta
        vote = self.meta.vote if vote is None else vote
        morphology = self.meta.morphology if morphology is None else morphology
        t = self.threshold if threshold is None else float(threshold)
        probs, patch = [], []
        for start in range(0, int(x.shape[0]), batch_size):
            xb = self.preprocess(x[start : start + batch_size], self.device)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            p, pp = predict_batch(self.model, xb, tta=tta, vote=vote)
            probs.append(p)
            patch.append(pp)
        prob = np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, *x.shape[2:]), np.float32)
        mask = np.asarray(apply_threshold(prob, t), dtype=np.uint8)
        if morphology and morphology != "none":
            mask = np.asarray(morph(mask, morphology), dtype=np.uint8)
        return {"prob": prob, "mask": mask, "patch_prob": np.concatenate(patch).astype(np.float32) if patch else np.zeros(0, np.float32)}


def predict_batch(model: nn.Module, x: torch.Tensor, *, tta: str = "none", vote: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Landslide probability ``(B, H, W)`` and patch probability ``(B,)`` for preprocessed ``x`` ``(B, C, H, W)``.

    Uses ``imagery.postprocess.predict_probs`` (TTA over rotations/flips, voting over the
    multi-resolution outputs; the patch probability of ``imagery.models.patch_probability`` averaged
    over the TTA views).
    """
    from imagery.postprocess import predict_probs

    model.eval()
    with torch.inference_mode():
        out = predict_probs(model, x, tta=tta or "none", vote=bool(vote))
    return (out["prob"].float().cpu().numpy().astype(np.float32),
            out["patch_prob"].float().reshape(-1).cpu().numpy().astype(np.float32))


class _ProbabilityExport(nn.Module):
    """What the logged MLflow PyTorch model computes: landslide probability ``(N, H, W)`` of preprocessed input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x)["out"], dim=1)[:, 1]


def pip_requirements() -> list[str]:
    """Pinned requirements stored with the logged model (the versions installed now)."""
    from importlib.metadata import PackageNotFoundError, version

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
    from common.atomic import atomic_path

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
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_segmenter needs an active MLflow run")
    model = model.eval()
    device = next(model.parameters()).device
    with tempfile.TemporaryDirectory() as tmp:
        state_path, meta_path = save_segmenter_files(model, meta, tmp)
        mlflow.log_artifacts(tmp, artifact_path=SEGMENTER_ARTIFACT_DIR)
        if log_flavour:
            import copy

            from mlflow.models import infer_signature

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


def _resolve_local(uri: str, dst: str) -> Path:
    """A local folder holding ``model_meta.json`` for ``uri`` (a folder, ``runs:/...`` or ``models:/...``)."""
    local = Path(uri)
    if local.exists():
        folder = local if local.is_dir() else local.parent
    else:
        if "://" not in uri and ":/" not in uri:
            raise FileNotFoundError(f"--model {uri}: no such folder, and not an MLflow URI (runs:/<run_id> or models:/...)")
        import mlflow

        if uri.startswith("runs:/") and uri.rstrip("/").count("/") == 1:
            uri = f"{uri.rstrip('/')}/{SEGMENTER_ARTIFACT_DIR}"
        try:
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a bad URI
            raise ValueError(f"--model {uri}: cannot download the model ({' '.join(str(exc).split())[:200]})") from None
    hits = [folder] if (folder / META_NAME).is_file() else sorted(p.parent for p in folder.rglob(META_NAME))
    if not hits:
        raise ValueError(f"--model {uri}: no {META_NAME} found; expected a segmenter logged by pipelines.train_imagery")
    return hits[0]


def load_segmenter(uri: str, device: str | torch.device = "auto") -> Segmenter:
    """Rebuild the segmenter logged at ``uri`` (``runs:/<run_id>[/segmenter]``, ``models:/...`` or a local folder).

    The network is created by name (``imagery.models.create_model``) and its weights are read with
    ``torch.load(weights_only=True)``: nothing is unpickled.
    """
    from imagery.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = _resolve_local(str(uri), tmp)
        meta_path, state_path = folder / META_NAME, folder / STATE_NAME
        try:
            meta = SegmenterMeta.from_dict(json.loads(meta_path.read_text(encoding="utf-8")), str(meta_path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_path}: not valid JSON ({exc.msg})") from None
        if not state_path.is_file():
            raise FileNotFoundError(f"{state_path}: file not found (the segmenter's weights)")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
            raise ValueError(f"{state_path}: not a readable state dict ({exc.__class__.__name__})") from None
    model = create_model(meta.model_name, **meta.model_kwargs)
    model.load_state_dict(state, strict=True)
    return Segmenter(model, meta, device)


__all__ = [
    "META_NAME",
    "STATE_NAME",
    "Segmenter",
    "SegmenterMeta",
    "load_segmenter",
    "log_segmenter",
    "pip_requirements",
    "predict_batch",
    "save_segmenter_files",
]
