"""Helpers for the scene tests: tiny segmenters on disk, a rule-based fake segmenter, small rasters."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
import rasterio.errors
import torch
from torch import nn

from imagery.data.bands import MODEL_UNITS, model_unit_factor
from imagery.inference import SegmenterMeta, save_segmenter_files
from imagery.models import create_model
from imagery.transforms.features import channel_names
from tests.conftest import shared_dataset

L2A_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B11", "B12"]


def tiny_model(
    folder: Path,
    bands: list[str],
    *,
    prob: float | None = 1e-6,
    channel_set: int = 23,
    gsd_m: float = 10.0,
    **meta_fields: object,
) -> Path:
    """A width-4 small RAU-Net (mono head) saved as a segmenter folder (``gsd_m`` and ``meta_fields``: stored in
    its ``SegmenterMeta``).

    ``prob``: the head's output conv is set to give this landslide probability everywhere (an empty mask
    at the default threshold: deterministic outputs); ``None`` keeps the random initialisation.
    """
    ch = list(channel_names(channel_set, bands))
    torch.manual_seed(0)
    kw = {"in_channels": len(ch), "num_classes": 2, "head": "mono", "base_width": 4}
    model = create_model("small_rau_net1", **kw)
    if prob is not None:
        last = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2][-1]
        logit = float(np.log(prob / (1 - prob)))
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.0, logit]))
    meta = SegmenterMeta(
        "small_rau_net1",
        kw,
        channel_set,
        threshold=0.5,
        band_order=bands,
        head="mono",
        channels=ch,
        gsd_m=gsd_m,
        **meta_fields,  # type: ignore[arg-type]
    )
    save_segmenter_files(model, meta, folder)
    return folder


class RuleSegmenter:
    """A fake segmenter for library tests: landslide where red reflectance > ``red_min`` (bare-soil scars)."""

    def __init__(self, bands: list[str], red_min: float = 0.12, threshold: float = 0.5) -> None:
        self.bands = tuple(bands)
        self.threshold = threshold
        self.meta = SimpleNamespace(units=MODEL_UNITS)
        self.device = torch.device("cpu")
        self.red_min = red_min
        self.calls = 0

    def predict(self, images: np.ndarray, batch_size: int = 16, **_: object) -> dict[str, np.ndarray]:
        self.calls += 1
        red = np.asarray(images)[:, self.bands.index("B4")] / model_unit_factor("B4")
        red = np.nan_to_num(red, nan=0.0)
        z = np.clip((red - self.red_min) * 400.0, -50, 50)
        return {"prob": (1.0 / (1.0 + np.exp(-z))).astype(np.float32)}


def write_tif(path: Path, array: np.ndarray, crs: str, transform, nodata=None, driver: str = "GTiff") -> Path:
    arr = array if array.ndim == 3 else array[None]
    profile = dict(
        driver=driver,
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        nodata=nodata,
        crs=crs,
        transform=transform,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    return path


def local_29rkh_item(tmp: Path) -> Path:
    """The real 29RKH STAC item with its asset hrefs rewritten to the shared local COGs (relative hrefs)."""
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    item = json.loads((src / "S2A_29RKH_20200219_0_L2A.json").read_text())
    for asset in item["assets"].values():
        name = asset["href"].rsplit("/", 1)[-1]
        if (src / name).exists():
            asset["href"] = str(src / name)
    out = tmp / "item.json"
    out.write_text(json.dumps(item))
    return out


def copy_scene(tmp: Path, name: str = "scene") -> Path:
    """A writable copy of the real 29RKH band folder (for the bad-input cases)."""
    src = shared_dataset("sentinel2_l2a_cogs_29RKH")
    dst = tmp / name
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst
