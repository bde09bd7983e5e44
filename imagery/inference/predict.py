"""Inference on L4S patch files and on larger scenes (tiling with overlap and weighted stitching).

Inputs (``read_inputs``):

* an L4S patch file ``image_N.h5`` (dataset ``img`` ``(128, 128, 14)``) or a folder of them;
* a scene: ``.npy`` or ``.h5`` (dataset ``img``, or the only dataset) of shape ``(H, W, 14)`` with
  ``H`` or ``W`` larger than the patch size. It is cut into ``tile x tile`` windows overlapping by
  ``overlap`` px (the last window is aligned to the far edge; scenes smaller than a tile are
  reflect-padded), every window is predicted, and the probabilities are blended with a window
  weight that is largest in a tile's centre and small at its border (``blend_weights``).

Outputs per item (``write_outputs``): ``mask_<N>.h5`` (L4S format, uint8 0/1), ``prob_<N>.npy``
(float32 ``(H, W)``) and ``overlay_<N>.png``, each written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from common.atomic import atomic_dir, atomic_path, atomic_write
from common.cli import InputNotFoundError, UserError
from common.fingerprint import fingerprint_files
from common.tracking import log_fingerprint
from imagery.data import BANDS, N_BANDS, write_mask
from imagery.inference.config import DEFAULT_BATCH, DEFAULT_OVERLAP, PredictConfig
from imagery.inference.postprocess import apply_threshold
from imagery.inference.postprocess import morphology as morph
from imagery.inference.serving import load_segmenter
from imagery.plot import plot_patch, save_figure

_ID_RE = re.compile(r"(\d+)$")
ProbFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class InputItem:
    """One thing to predict: ``image`` ``(14, H, W)`` raw L4S values, its output ``name`` and whether it is a scene."""

    name: str
    image: np.ndarray
    source: str
    is_scene: bool = False


def _output_name(path: Path) -> str:
    m = _ID_RE.search(path.stem)
    return m.group(1) if m and path.stem.startswith("image_") else path.stem


def _read_array_file(path: Path) -> np.ndarray:
    """``(H, W, 14)`` array from a ``.npy`` (no pickles) or ``.h5`` file."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
    else:
        if not h5py.is_hdf5(path):
            raise UserError(f"{path}: not an HDF5 file, expected an L4S image or a scene array")
        with h5py.File(path, "r") as fh:
            keys = list(fh.keys())
            key = "img" if "img" in fh else (keys[0] if len(keys) == 1 else None)
            if key is None or not isinstance(fh[key], h5py.Dataset):
                raise UserError(f"{path}: expected dataset 'img' of shape (H, W, 14), found {keys}")
            arr = fh[key][()]
    if arr.ndim != 3 or arr.shape[2] != N_BANDS:
        raise UserError(f"{path}: array has shape {arr.shape}, expected (H, W, {N_BANDS}) (L4S band order)")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path}: array has dtype {arr.dtype}, expected a float array")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)


def read_inputs(path: str | Path, patch_size: int = 128) -> list[InputItem]:
    """Read a patch file, a folder of patch/scene files, or a scene file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"--input {p}: file or folder not found")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".npy") and q.is_file())
        if not files:
            img = p / "img"
            if img.is_dir():
                return read_inputs(img, patch_size)
            raise UserError(f"--input {p}: no .h5 or .npy files in this folder (expected image_N.h5 patches)")
    else:
        if p.suffix not in (".h5", ".npy"):
            raise UserError(f"--input {p}: expected an .h5 patch/scene or a .npy scene, got {p.suffix or 'no suffix'}")
        files = [p]
    items = []
    for f in files:
        image = _read_array_file(f)
        if not np.isfinite(image).any():
            raise UserError(f"{f}: every value is NaN/Inf")
        scene = image.shape[1] != patch_size or image.shape[2] != patch_size
        items.append(InputItem(_output_name(f), image, str(f), scene))
    return items


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``tile`` px covering ``length`` px with at least ``overlap`` px overlap."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise UserError(f"tile must be > 0 and 0 <= overlap < tile; got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """Tiles of ``tile`` px overlapping by ``overlap`` that cover ``height`` x ``width`` px (as :func:`predict_scene`
    and the windowed scene prediction lay them out; the engine's workload)."""
    return len(tile_starts(max(height, tile), tile, overlap)) * len(tile_starts(max(width, tile), tile, overlap))


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """``(tile, tile)`` float32 stitching weights: the outer product of a 1-D window that is 1 in the tile's
    centre and falls smoothly to near 0 at its border over ``min(overlap, tile // 2)`` px (a raised cosine,
    ``sin^2(pi/2 (i + 0.5) / n)``; ``overlap >= tile / 2`` gives a full Hann window). Never 0, so a pixel that
    only one tile covers (a scene edge) keeps that tile's prediction.

    Two neighbours overlapping by exactly ``overlap`` px have ramps that sum to 1 (``sin^2 + cos^2``), so the
    blended probability moves from one tile's to the other's without a step: no seam where the grid falls.
    """
    ramp = np.ones(tile, dtype=np.float64)
    n = min(overlap, tile // 2)
    if n > 0:
        edge = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        ramp[:n] = edge
        ramp[tile - n :] = edge[::-1]
    return np.outer(ramp, ramp).astype(np.float32)


def add_tile(acc: np.ndarray, norm: np.ndarray, prob: np.ndarray, weight: np.ndarray, y: int, x: int) -> None:
    """Accumulate one tile's probability ``prob`` ``(h, w)`` at ``(y, x)`` of the buffers ``acc``/``norm``
    (weighted sum and sum of weights; the blended probability is ``acc / norm``). The one blending step of
    both tiled paths (:func:`predict_scene` in memory, :mod:`imagery.inference.scene` windowed)."""
    h, w = prob.shape
    acc[y : y + h, x : x + w] += weight * prob
    norm[y : y + h, x : x + w] += weight


def predict_scene(
    prob_fn: ProbFn,
    scene: np.ndarray,
    *,
    tile: int = 128,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH,
) -> np.ndarray:
    """Landslide probability ``(H, W)`` float32 for a raw scene ``(14, H, W)``.

    ``prob_fn`` maps raw tiles ``(B, 14, tile, tile)`` to probabilities ``(B, tile, tile)``. Windows
    overlap by ``overlap`` px; overlapping predictions are averaged with ``blend_weights``.
    """
    if scene.ndim != 3:
        raise ValueError(f"scene has shape {scene.shape}, expected (14, H, W)")
    _, h, w = scene.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    padded = (
        np.pad(scene, ((0, 0), (0, ph), (0, pw)), mode="reflect" if (ph < h and pw < w) else "edge")
        if ph or pw
        else scene
    )
    hh, ww = padded.shape[1:]
    weight = blend_weights(tile, overlap)
    acc = np.zeros((hh, ww), dtype=np.float64)
    norm = np.zeros((hh, ww), dtype=np.float64)
    windows = [(y, x) for y in tile_starts(hh, tile, overlap) for x in tile_starts(ww, tile, overlap)]
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        batch = np.stack([padded[:, y : y + tile, x : x + tile] for y, x in chunk])
        probs = np.asarray(prob_fn(batch), dtype=np.float32)
        if probs.shape != (len(chunk), tile, tile):
            raise ValueError(f"prob_fn returned shape {probs.shape}, expected {(len(chunk), tile, tile)}")
        for (y, x), p in zip(chunk, probs, strict=True):
            add_tile(acc, norm, p, weight, y, x)
    return (acc / norm)[:h, :w].astype(np.float32)


def write_outputs(
    out_dir: str | Path,
    name: str,
    image: np.ndarray,
    prob: np.ndarray,
    mask: np.ndarray,
    *,
    overlay: bool = True,
) -> list[Path]:
    """Write ``mask_<name>.h5`` (L4S uint8), ``prob_<name>.npy`` (float32) and ``overlay_<name>.png`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_mask(out / f"mask_{name}.h5", np.asarray(mask, dtype=np.uint8))]
    prob_path = out / f"prob_{name}.npy"
    with atomic_path(prob_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(prob, dtype=np.float32))
    paths.append(prob_path)
    if overlay:
        paths.append(save_overlay(out / f"overlay_{name}.png", image, prob=prob, pred=mask))
    return paths


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    bands: tuple[str, ...] | list[str] = BANDS,
) -> Path:
    """PNG of the RGB patch with the ground truth / probability / prediction (``imagery.plot``), atomically."""
    return save_figure(plot_patch(image, mask=mask, prob=prob, pred=pred, bands=bands), path)


@dataclass(frozen=True)
class PredictResult:
    """What ``pipelines.predict_imagery`` wrote: the output folder and one summary row per input item."""

    out: Path
    rows: list[dict[str, object]]


def finish_mask(prob: np.ndarray, threshold: float, morphology: str | None) -> np.ndarray:
    """``(H, W)`` uint8 mask: ``prob > threshold``, then the morphology (``None``/``"none"``: as is)."""
    mask = np.asarray(apply_threshold(prob, threshold), dtype=np.uint8)
    if morphology and morphology != "none":
        mask = np.asarray(morph(mask[None], morphology), dtype=np.uint8)[0]
    return mask


def predict_inputs(cfg: PredictConfig, *, tracking_uri: str | None = None) -> PredictResult:
    """Predict every patch or scene of ``cfg.input`` with the segmenter ``cfg.model_uri`` into ``cfg.out``.

    Every input is read and checked before anything is written. Per item: ``mask_<N>.h5``,
    ``prob_<N>.npy`` and ``overlay_<N>.png``; for all items ``predictions.csv``. Logs the input
    fingerprint to the active MLflow run.
    """
    if not 0 <= cfg.overlap < cfg.tile:
        raise UserError(f"--overlap must be in [0, {cfg.tile - 1}], got {cfg.overlap}")
    items = read_inputs(cfg.input, cfg.tile)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    workload = sum(count_tiles(*it.image.shape[-2:], cfg.tile, cfg.overlap) if it.is_scene else 1 for it in items)
    segmenter = load_segmenter(
        cfg.model_uri, device=cfg.device, tracking_uri=tracking_uri, runtime=cfg.runtime, workload=workload
    )
    log_fingerprint(fingerprint_files([it.source for it in items], source=cfg.input), context="inference")
    opts = {"tta": cfg.tta, "vote": cfg.vote, "morphology": None, "threshold": cfg.threshold}
    t = segmenter.threshold if cfg.threshold is None else cfg.threshold
    tile = segmenter.fixed_size or cfg.tile  # an ONNX file exported with a fixed tile size: tile at its size
    overlap = cfg.overlap if tile == cfg.tile else min(cfg.overlap, tile // 2)
    rows: list[dict[str, object]] = []
    with atomic_dir(out) as staging:  # every output appears together, or none does
        for item in items:
            if item.is_scene:
                prob = predict_scene(
                    lambda b: segmenter.predict(b, batch_size=cfg.batch_size, **opts)["prob"],
                    item.image,
                    tile=tile,
                    overlap=overlap,
                    batch_size=cfg.batch_size,
                )
                mask = finish_mask(prob, t, cfg.morphology or segmenter.meta.morphology)
                patch_prob = float("nan")
            else:
                res = segmenter.predict(
                    item.image[None],
                    batch_size=1,
                    tta=cfg.tta,
                    vote=cfg.vote,
                    morphology=cfg.morphology,
                    threshold=cfg.threshold,
                )
                prob, mask, patch_prob = res["prob"][0], res["mask"][0], float(res["patch_prob"][0])
            write_outputs(staging, item.name, item.image, prob, mask, overlay=cfg.overlays)
            rows.append(
                {
                    "name": item.name,
                    "source": item.source,
                    "height": prob.shape[0],
                    "width": prob.shape[1],
                    "patch_prob": patch_prob,
                    "landslide_pixels": int(mask.sum()),
                    "scene": item.is_scene,
                }
            )
        with atomic_write(staging / "predictions.csv") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
    return PredictResult(out, rows)


__all__ = [
    "InputItem",
    "PredictResult",
    "finish_mask",
    "predict_inputs",
    "add_tile",
    "blend_weights",
    "predict_scene",
    "read_inputs",
    "save_overlay",
    "tile_starts",
    "write_outputs",
]
