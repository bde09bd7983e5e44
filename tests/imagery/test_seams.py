"""No seams: an interior pixel's probability does not depend on where the tile grid falls (issue 17, item 3).

A 384 x 384 px scene mosaicked from the real L4S patches is predicted whole and cropped by 64 px (a multiple of
the network's stride 16, so the network itself is shift-equivariant and only the tiling differs); away from
the edges the 99th percentile of the absolute difference must be at most :data:`SEAM_TOLERANCE`, with the
default tile and overlap, in both tiled paths (in memory and windowed). The model is a fixed-seed, randomly
initialised small RAU-Net whose logits are scaled so that its probabilities spread over 0-1 (std ~0.25) like a
trained model's: with the old linear-ramp blending and overlap 32 the same measure was 0.38.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from imagery.data import load_patches
from imagery.data.bands import BANDS, model_unit_factor
from imagery.inference import SegmenterMeta
from imagery.inference.config import DEFAULT_OVERLAP, SceneConfig
from imagery.inference.predict import blend_weights, predict_scene, tile_starts
from imagery.inference.scene import run_scene
from imagery.inference.segmenter import Segmenter
from imagery.models import create_model
from imagery.transforms.features import channel_names
from tests.conftest import shared_dataset
from tests.scenes.helpers import L2A_BANDS, write_tif

SEAM_TOLERANCE = 0.10
CROP = 64
MARGIN = 32  # px away from every edge of the cropped scene


def _segmenter(bands: list[str]) -> Segmenter:
    ch = list(channel_names(23, bands))
    torch.manual_seed(0)
    kw = {"in_channels": len(ch), "num_classes": 2, "head": "mono", "base_width": 8}
    model = create_model("small_rau_net1", **kw)
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2][-1]
    with torch.no_grad():
        last.weight.mul_(3.0)
        last.bias.zero_()
    meta = SegmenterMeta("small_rau_net1", kw, 23, band_order=list(bands), head="mono", channels=ch)
    return Segmenter(model, meta, "cpu")


@pytest.fixture(scope="module")
def mosaic() -> np.ndarray:
    """``(14, 384, 384)`` raw L4S values: 9 of the real patches in a 3 x 3 mosaic."""
    imgs = np.asarray(load_patches(shared_dataset("landslide4sense_camduc"), layout="plain").images)
    return np.concatenate([np.concatenate(list(imgs[r * 3 : r * 3 + 3]), axis=2) for r in range(3)], axis=1)


def _seam_p99(whole: np.ndarray, cropped: np.ndarray) -> float:
    a = whole[CROP + MARGIN : -MARGIN, CROP + MARGIN : -MARGIN]
    b = cropped[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(np.percentile(np.abs(a - b), 99))


def test_blend_weights_sum_to_one_across_an_overlap() -> None:
    """Two neighbours overlapping by ``overlap`` px: the ramps sum to 1 (no step where one tile ends)."""
    w = np.sqrt(np.diag(blend_weights(128, 64)))  # the 1-D window (the weights are its outer product)
    assert w.min() > 0 and w.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(w[64:] + w[:64], 1.0, atol=1e-6)
    assert np.all(np.abs(np.diff(w)) < 0.05)  # smooth: no jump anywhere


@pytest.mark.real_data
def test_in_memory_tiling_has_no_seams(mosaic: np.ndarray) -> None:
    seg = _segmenter(list(BANDS))
    fn = lambda b: seg.predict(b)["prob"]  # noqa: E731
    whole = predict_scene(fn, mosaic)  # the defaults: tile 128, overlap DEFAULT_OVERLAP
    assert whole.std() > 0.15  # the model's probabilities do spread (else a seam could not show)
    cropped = predict_scene(fn, mosaic[:, CROP:, CROP:])
    assert tile_starts(384, 128, DEFAULT_OVERLAP) != [CROP + s for s in tile_starts(320, 128, DEFAULT_OVERLAP)]
    assert _seam_p99(whole, cropped) <= SEAM_TOLERANCE


def _scene_tif(path: Path, raw: np.ndarray, x0: float, y0: float) -> Path:
    refl = np.stack([raw[BANDS.index(b)] / model_unit_factor(b) for b in L2A_BANDS]).astype(np.float32)
    return write_tif(path, refl, "EPSG:32648", Affine(10.0, 0, x0, 0, -10.0, y0))


@pytest.mark.real_data
def test_windowed_scene_has_no_seams(mosaic: np.ndarray, tmp_path: Path) -> None:
    seg = _segmenter(L2A_BANDS)
    probs = []
    for name, raw, off in (("whole", mosaic, 0), ("cropped", mosaic[:, CROP:, CROP:], CROP)):
        tif = _scene_tif(tmp_path / f"{name}.tif", raw, 600000.0 + 10 * off, 1800000.0 - 10 * off)
        cfg = SceneConfig(
            scene=str(tif),
            bands=L2A_BANDS,
            image_scale="reflectance",
            model_uri="test",
            out=str(tmp_path / name),
            progress=False,
            min_area_m2=0,
        )
        res = run_scene(cfg, segmenter=seg, log=lambda _: None)
        with rasterio.open(res.paths["probability.tif"]) as ds:
            probs.append(ds.read(1))
    assert probs[0].std() > 0.15
    assert _seam_p99(*probs) <= SEAM_TOLERANCE
