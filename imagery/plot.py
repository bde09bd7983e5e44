"""Pictures of L4S patches for MLflow artifacts and reports (matplotlib ``Figure`` objects: no pyplot,
no global backend state).

:func:`plot_patch` draws side by side: the RGB composite (B4, B3, B2, each band stretched
between its own 2nd and 98th percentile), the ground-truth mask, an optional landslide
probability map (0-1, ``viridis``) and an optional predicted-mask overlay on the RGB
(red = predicted, and where a mask is given: yellow = true positive, cyan = missed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common.atomic import atomic_path
from imagery.data.bands import BANDS

RGB_BANDS = ("B4", "B3", "B2")


def rgb_composite(
    image: np.ndarray, low: float = 2.0, high: float = 98.0, bands: tuple[str, ...] | list[str] = BANDS
) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] from a ``(len(bands), H, W)`` patch: B4/B3/B2 with a per-band percentile
    stretch (a band set without one of them shows its first band in gray)."""
    img = np.asarray(image, dtype=np.float64)
    names = list(bands)
    if img.ndim != 3 or img.shape[0] != len(names):
        raise ValueError(f"plot image must be ({len(names)}, H, W), got shape {img.shape}")
    picks = [names.index(b) for b in RGB_BANDS] if all(b in names for b in RGB_BANDS) else [0, 0, 0]
    chans = []
    for i in picks:
        band = np.nan_to_num(img[i], nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = np.percentile(band, [low, high])
        chans.append(np.clip((band - lo) / max(hi - lo, 1e-8), 0.0, 1.0))
    return np.stack(chans, axis=-1)


def plot_patch(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    title: str | None = None,
    bands: tuple[str, ...] | list[str] = BANDS,
) -> Any:
    """A matplotlib Figure of one patch.

    Args:
        image: ``(len(bands), H, W)`` L4S bands (NumPy or torch).
        mask: ``(H, W)`` ground truth 0/1 (255 = unlabelled, drawn grey), optional.
        prob: ``(H, W)`` landslide probability in [0, 1], optional.
        pred: ``(H, W)`` predicted 0/1 mask, drawn as an overlay on the RGB, optional.
        title: figure title.
    """

    def arr(a: Any) -> np.ndarray | None:
        if a is None:
            return None
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        return np.asarray(a)

    image_np = arr(image)
    assert image_np is not None
    mask_np, prob_np, pred_np = arr(mask), arr(prob), arr(pred)
    hw = image_np.shape[1:]
    for name, a in (("mask", mask_np), ("prob", prob_np), ("pred", pred_np)):
        if a is not None and a.shape != hw:
            raise ValueError(f"plot {name} has shape {a.shape}, expected {hw} like the image")
    rgb = rgb_composite(image_np, bands=bands)
    panels: list[tuple[str, np.ndarray, dict[str, Any]]] = [("RGB (B4, B3, B2)", rgb, {})]
    if mask_np is not None:
        shown = np.where(mask_np == 1, 1.0, np.where(mask_np == 0, 0.0, 0.5))
        panels.append(("mask", shown, {"cmap": "gray", "vmin": 0, "vmax": 1}))
    if prob_np is not None:
        panels.append(("P(landslide)", prob_np, {"cmap": "viridis", "vmin": 0, "vmax": 1}))
    if pred_np is not None:
        over = rgb.copy()
        p = pred_np > 0
        over[p] = [1.0, 0.0, 0.0]
        if mask_np is not None:
            m = mask_np == 1
            over[p & m] = [1.0, 1.0, 0.0]
            over[m & ~p] = [0.0, 1.0, 1.0]
        panels.append(("prediction overlay", over, {}))
    fig = Figure(figsize=(3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, data, kw) in zip(axes, panels, strict=True):
        im = ax.imshow(data, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
        if name == "P(landslide)":
            fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically and return the path."""
    target = Path(path)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target
