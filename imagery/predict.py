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

import numpy as np

from common.atomic import atomic_path

N_BANDS = 14
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
            raise ValueError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None
    else:
        import h5py

        if not h5py.is_hdf5(path):
            raise ValueError(f"{path}: not an HDF5 file, expected an L4S image or a scene array")
        with h5py.File(path, "r") as fh:
            keys = list(fh.keys())
            key = "img" if "img" in fh else (keys[0] if len(keys) == 1 else None)
            if key is None or not isinstance(fh[key], h5py.Dataset):
                raise ValueError(f"{path}: expected dataset 'img' of shape (H, W, 14), found {keys}")
            arr = fh[key][()]
    if arr.ndim != 3 or arr.shape[2] != N_BANDS:
        raise ValueError(f"{path}: array has shape {arr.shape}, expected (H, W, {N_BANDS}) (L4S band order)")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{path}: array has dtype {arr.dtype}, expected a float array")
    return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)


def read_inputs(path: str | Path, patch_size: int = 128) -> list[InputItem]:
    """Read a patch file, a folder of patch/scene files, or a scene file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--input {p}: file or folder not found")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".npy") and q.is_file())
        if not files:
            img = p / "img"
            if img.is_dir():
                return read_inputs(img, patch_size)
            raise ValueError(f"--input {p}: no .h5 or .npy files in this folder (expected image_N.h5 patches)")
    else:
        if p.suffix not in (".h5", ".npy"):
            raise ValueError(f"--input {p}: expected an .h5 patch/scene or a .npy scene, got {p.suffix or 'no suffix'}")
        files = [p]
    items = []
    for f in files:
        image = _read_array_file(f)
        if not np.isfinite(image).any():
            raise ValueError(f"{f}: every value is NaN/Inf")
        scene = image.shape[1] != patch_size or image.shape[2] != patch_size
        items.append(InputItem(_output_name(f), image, str(f), scene))
    return items


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``tile`` px covering ``length`` px with at least ``overlap`` px overlap."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tile must be > 0 and 0 <= overlap < tile; got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """``(tile, tile)`` float32 stitching weights: 1 in the centre, ramping linearly to ``1/(overlap+1)`` at the border."""
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        edge = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
        n = min(overlap, tile // 2)
        ramp[:n] = edge[:n]
        ramp[tile - n :] = edge[:n][::-1]
    return np.outer(ramp, ramp)


def predict_scene(
    prob_fn: ProbFn, scene: np.ndarray, *, tile: int = 128, overlap: int = 32, batch_size: int = 16
) -> np.ndarray:
    """Landslide probability ``(H, W)`` float32 for a raw scene ``(14, H, W)``.

    ``prob_fn`` maps raw tiles ``(B, 14, tile, tile)`` to probabilities ``(B, tile, tile)``. Windows
    overlap by ``overlap`` px; overlapping predictions are averaged with ``blend_weights``.
    """
    if scene.ndim != 3:
        raise ValueError(f"scene has shape {scene.shape}, expected (14, H, W)")
    _, h, w = scene.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    padded = np.pad(scene, ((0, 0), (0, ph), (0, pw)), mode="reflect" if (ph < h and pw < w) else "edge") if ph or pw else scene
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
            acc[y : y + tile, x : x + tile] += weight * p
            norm[y : y + tile, x : x + tile] += weight
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
    from imagery.dataset import write_mask

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


def save_overlay(path: str | Path, image: np.ndarray, *, mask: np.ndarray | None = None,
                 prob: np.ndarray | None = None, pred: np.ndarray | None = None) -> Path:
    """PNG of the RGB patch with the ground truth / probability / prediction (``imagery.plot``), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from imagery.plot import plot_patch, save_figure

    fig = plot_patch(image, mask=mask, prob=prob, pred=pred)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return Path(path)


__all__ = [
    "InputItem",
    "blend_weights",
    "predict_scene",
    "read_inputs",
    "save_overlay",
    "tile_starts",
    "write_outputs",
]
