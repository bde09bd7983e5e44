"""A trained segmenter with its pre- and post-processing: raw patches in, probabilities and masks out.

* :class:`SegmenterMeta`: everything besides the weights that is needed to use a trained network
  (stored as ``model_meta.json`` beside ``state_dict.pt``, see :mod:`imagery.inference.serving`).
* :class:`Segmenter`: ``predict(raw (N, 14, H, W)) -> {"prob", "mask", "patch_prob"}``.
* :func:`predict_batch` / :func:`infer_probs`: probabilities of *preprocessed* inputs (the training
  loop's validation uses :func:`infer_probs`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from common.cli import UserError
from imagery.data.bands import BANDS, MODEL_UNITS
from imagery.device import resolve_device
from imagery.inference.config import DEFAULT_BATCH
from imagery.inference.lanes import in_lane, shared_lanes
from imagery.inference.postprocess import apply_threshold, predict_probs
from imagery.inference.postprocess import morphology as morph
from imagery.models import main_output_only, patch_probability
from imagery.transforms.normalize import Normalizer
from imagery.transforms.preprocess import Preprocessor

META_FORMAT = 1
#: Ground sampling distance (m per pixel) of a model stored without ``gsd_m``: every model trained before the
#: field existed learnt from L4S patches or the project's synthetic patches, both 10 m.
DEFAULT_GSD_M = 10.0
TRAINING_KINDS = ("synthetic", "real")


@dataclass
class SegmenterMeta:
    """Everything besides the weights that is needed to use a trained segmenter.

    ``model_kwargs`` are passed to ``imagery.models.create_model(model_name, **model_kwargs)``;
    ``normalizer`` is ``Normalizer.to_dict()`` or ``None`` (no normalisation); ``threshold`` is the
    landslide-probability cut (landslide iff p > threshold); ``band_order`` the raw input bands the model
    takes, in that order (canonical names; empty in models written before band sets: all 14 L4S bands);
    ``units`` the units of those inputs (:data:`imagery.data.bands.MODEL_UNITS`, ``"l4s"``); ``channels`` the
    names of the model's input channels (``imagery.transforms.features.channel_names``).

    What the model learnt from, for the checks before it is applied to a scene (``imagery.inference.scene``):
    ``gsd_m`` the ground sampling distance of its training patches, m per pixel (:data:`DEFAULT_GSD_M` for
    models stored without it); ``band_stats`` ``{band: {"mean": m, "std": s}}`` of each raw input band over
    the training patches, in model units (empty in older models: no domain check); ``training_data``
    ``{"name", "kind": "synthetic"|"real", "fingerprint"}`` of the training set (``None`` in older models).
    ``temporal`` / ``sensor``: set for a model trained on Sen12Landslides time series; such a model refuses a
    single-date input (:meth:`require_single_date`). ``channel_norm``: the dataset norm statistics its temporal
    channels were built with (``{band: {"mean", "std"}}``, ``imagery.data.sen12_temporal``; empty: none), which
    inference on composites (``map_event``) applies the same way.
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
    units: str = MODEL_UNITS
    channels: list[str] = field(default_factory=list)
    gsd_m: float = DEFAULT_GSD_M
    band_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    training_data: dict[str, str] | None = None
    #: Sen12Landslides temporal channel set (``post``, ``pre-post``, ``pre-post-diff``) and sensor (``s2``, ``s1``,
    #: ``s2+s1``) of a model trained on time series (``imagery.data.sen12_temporal``); ``None``: single-date model
    temporal: str | None = None
    sensor: str | None = None
    channel_norm: dict[str, dict[str, float]] = field(default_factory=dict)
    format_version: int = META_FORMAT

    @property
    def bands(self) -> tuple[str, ...]:
        """The raw input bands (all 14 L4S bands for a model stored without a band list)."""
        return tuple(self.band_order) if self.band_order else BANDS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_meta.json") -> SegmenterMeta:
        required = ("model_name", "model_kwargs", "channel_set")
        missing = [k for k in required if k not in data]
        if missing:
            raise UserError(f"{source}: missing keys {missing}; expected a segmenter model_meta.json")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if known.get("gsd_m") is None:
            known.pop("gsd_m", None)
        try:
            gsd = float(known.get("gsd_m", DEFAULT_GSD_M))
        except (TypeError, ValueError):
            gsd = float("nan")
        if not (gsd > 0 and np.isfinite(gsd)):
            raise UserError(f"{source}: gsd_m must be a positive number of metres, got {known.get('gsd_m')!r}")
        return cls(**known)

    def require_single_date(self, what: str = "this input") -> None:
        """One-line :class:`UserError` when the model needs a time series (``temporal`` set) and ``what`` is one
        image (a scene, or a patch lacking the model's temporal channels)."""
        if self.temporal:
            raise UserError(
                f"{what}: the model was trained on the temporal set {self.temporal!r} ({self.sensor or 's2'}; channels "
                f"{', '.join(self.bands[:4])}, ...), which needs pre/post-event composites; give it Sen12Landslides "
                f"patches (imagery.data.sen12_temporal), not a single-date image"
            )

    @property
    def synthetic(self) -> bool:
        """Whether the model learnt from synthetic data only (``training_data.kind == "synthetic"``)."""
        return bool(self.training_data) and self.training_data.get("kind") == "synthetic"  # type: ignore[union-attr]


def band_statistics(images: np.ndarray, bands: tuple[str, ...] | list[str], max_patches: int = 512) -> dict:
    """``{band: {"mean", "std"}}`` of raw patches ``images`` ``(N, len(bands), H, W)`` (model units, NaN ignored),
    from at most ``max_patches`` patches evenly spaced through the set (the statistics stored with a model)."""
    n = int(images.shape[0])
    idx = np.unique(np.linspace(0, n - 1, num=min(n, max_patches)).round().astype(np.int64)) if n else []
    sample = np.asarray(images[idx], dtype=np.float64)
    out = {}
    for i, b in enumerate(bands):
        v = sample[:, i]
        v = v[np.isfinite(v)]
        if v.size:
            out[str(b)] = {"mean": float(v.mean()), "std": float(v.std())}
    return out


def state_digest(model: nn.Module) -> str:
    """sha256 of a network's weights (names, dtypes, shapes and values, in name order): identifies the
    exact model whatever file it travelled in (the fuser checks it)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Segmenter:
    """A trained network plus its preprocessing and post-processing.

    Attributes: ``model`` (eval mode, on ``device``), ``meta``, ``threshold``, ``channel_set``,
    ``digest`` (:func:`state_digest` of the weights).

    ``model`` is a torch network, or any callable with the same contract (preprocessed
    ``(B, C, H, W)`` tensor in, dict of logits out) such as :class:`imagery.inference.onnx.OnnxNetwork`
    (ONNX Runtime), which runs where it was built and carries its own ``digest``.
    """

    def __init__(
        self,
        model: nn.Module | Any,
        meta: SegmenterMeta,
        device: str | torch.device = "auto",
        channels_last: bool = True,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.channels_last = channels_last and isinstance(model, nn.Module)
        if isinstance(model, nn.Module):
            self.model = model.to(self.device).eval()
            # channels-last convolutions are the fast path on CPU (oneDNN) and GPU alike (benchmarks/)
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
        else:
            self.model = model
        self.meta = meta
        normalizer = None
        if meta.normalizer:
            normalizer = Normalizer.from_dict(meta.normalizer)
        if meta.units != MODEL_UNITS:
            raise UserError(f"model units {meta.units!r} are not supported; this version reads {MODEL_UNITS!r} models")
        self.preprocess = Preprocessor(meta.channel_set, normalizer, bands=meta.bands)
        #: one-core CPU lanes each batch of :meth:`predict` is split over (:mod:`imagery.inference.lanes`); 1: none.
        #: ``imagery.inference.engine.apply_engine`` sets it for the path it chose (eager torch on the CPU)
        self.lanes = 1

    @functools.cached_property
    def digest(self) -> str:
        if isinstance(self.model, nn.Module):
            return state_digest(self.model)
        return str(getattr(self.model, "digest", ""))

    @property
    def threshold(self) -> float:
        return float(self.meta.threshold)

    @property
    def channel_set(self) -> int:
        return int(self.meta.channel_set)

    @property
    def bands(self) -> tuple[str, ...]:
        """The raw bands ``predict`` takes, in order (L4S model units)."""
        return self.meta.bands

    @property
    def fixed_size(self) -> int | None:
        """The one tile size the network takes (an ONNX file exported with a fixed size), else ``None``."""
        return getattr(self.model, "fixed_size", None)

    @torch.inference_mode()
    def predict(
        self,
        images: np.ndarray | torch.Tensor,
        batch_size: int = DEFAULT_BATCH,
        tta: str | None = None,
        vote: bool | None = None,
        morphology: str | None = None,
        threshold: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Segment raw L4S patches.

        Args:
            images: ``(N, B, H, W)`` (or one ``(B, H, W)``) raw L4S values of the B bands ``self.bands``; full
                14-band L4S patches ``(N, 14, H, W)`` are accepted too and reduced to the model's bands.
            batch_size: patches per forward pass.
            tta, vote, morphology, threshold: override the stored defaults (``None`` = stored).

        Returns:
            ``prob`` ``(N, H, W)`` float32 landslide probability, ``mask`` ``(N, H, W)`` uint8
            (``prob > threshold``, then the morphology), ``patch_prob`` ``(N,)`` float32.
        """
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.ndim == 3:
            x = x.unsqueeze(0)
        nb = len(self.bands)
        if self.meta.temporal and (x.ndim != 4 or x.shape[1] != nb):
            self.meta.require_single_date(f"images of shape {tuple(x.shape)}")
        if x.ndim == 4 and x.shape[1] == len(BANDS) and nb != len(BANDS) and not self.meta.temporal:
            x = x[:, [BANDS.index(b) for b in self.bands]]
        if x.ndim != 4 or x.shape[1] != nb:
            raise UserError(
                f"Segmenter.predict: images have shape {tuple(x.shape)}, expected (N, {nb}, H, W) raw L4S bands "
                f"({', '.join(self.bands)})"
            )
        fixed = self.fixed_size
        if fixed and tuple(x.shape[2:]) != (fixed, fixed):
            raise UserError(
                f"the ONNX model takes {fixed}x{fixed} px tiles (exported with a fixed size), got "
                f"{x.shape[2]}x{x.shape[3]}: pass --tile {fixed}, or export it again with pipelines.export_imagery"
            )
        tta = self.meta.tta if tta is None else tta
        vote = self.meta.vote if vote is None else vote
        morphology = self.meta.morphology if morphology is None else morphology
        t = self.threshold if threshold is None else float(threshold)
        probs, patch = [], []
        for start in range(0, int(x.shape[0]), batch_size):
            part = x[start : start + batch_size]
            if self.lanes > 1 and len(part) > 1 and not in_lane():  # each lane preprocesses and runs its share
                pool = shared_lanes(self.lanes)
                outs = pool.map(lambda q: self._predict_part(q, tta, vote), pool.split(part))
                p, pp = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
            else:
                p, pp = self._predict_part(part, tta, vote)
            probs.append(p)
            patch.append(pp)
        prob = np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, *x.shape[2:]), np.float32)
        mask = np.asarray(apply_threshold(prob, t), dtype=np.uint8)
        if morphology and morphology != "none":
            mask = np.asarray(morph(mask, morphology), dtype=np.uint8)
        return {
            "prob": prob,
            "mask": mask,
            "patch_prob": np.concatenate(patch).astype(np.float32) if patch else np.zeros(0, np.float32),
        }

    def _predict_part(self, x: torch.Tensor, tta: str, vote: bool) -> tuple[np.ndarray, np.ndarray]:
        """Preprocess raw patches ``x`` ``(B, bands, H, W)`` and run them: probabilities ``(B, H, W)`` and
        patch probabilities ``(B,)`` (in the caller's thread: a lane, or the caller itself)."""
        xb = self.preprocess(x, self.device)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return predict_batch(self.model, xb, tta=tta, vote=vote)


def predict_batch(
    model: nn.Module, x: torch.Tensor, *, tta: str = "none", vote: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Landslide probability ``(B, H, W)`` and patch probability ``(B,)`` for preprocessed ``x`` ``(B, C, H, W)``.

    Uses ``imagery.inference.postprocess.predict_probs`` (TTA over rotations/flips, voting over the
    multi-resolution outputs; the patch probability of ``imagery.models.patch_probability`` averaged
    over the TTA views).
    """
    model.eval()
    with torch.inference_mode():
        out = predict_probs(model, x, tta=tta or "none", vote=bool(vote))
    return (
        out["prob"].float().cpu().numpy().astype(np.float32),
        out["patch_prob"].float().reshape(-1).cpu().numpy().astype(np.float32),
    )


@torch.no_grad()
def infer_probs(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Landslide probability of the 128-px output ``(N, H, W)`` float32 and patch probability ``(N,)``.

    ``x`` holds preprocessed model inputs ``(N, C, H, W)`` (any device); ``model`` is put in eval mode.
    """
    device = device or next(model.parameters()).device
    model.eval()
    probs, patch = [], []
    for start in range(0, int(x.shape[0]), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), main_output_only():
            out = model(xb)
        out = {k: v.float() for k, v in out.items()}
        probs.append(torch.softmax(out["out"], dim=1)[:, 1].cpu())
        patch.append(patch_probability(out).float().reshape(-1).cpu())
    return torch.cat(probs).numpy().astype(np.float32), torch.cat(patch).numpy().astype(np.float32)
