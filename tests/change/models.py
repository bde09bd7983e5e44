"""Tiny segmenters for the map_event tests, trained in the test: a temporal (pre/post) model and a single-date one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imagery.data.sen12_temporal import s2_channels
from imagery.inference import SegmenterMeta, save_segmenter_files
from imagery.models import create_model
from imagery.transforms.features import channel_names
from tests.change.helpers import BARE, VEG

#: The synthetic world's bands, by their Sen12Landslides names.
S2_SUBSET = ("B02", "B03", "B04", "B08", "B11")
_CANON = {"B02": "B2", "B03": "B3", "B04": "B4", "B08": "B8", "B11": "B11"}


def _scenes(n: int, size: int, rng: np.random.Generator) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Pre/post reflectance ``{band: (n, size, size)}`` with bare rectangles after the event (the landslides,
    on slopes), a harvested field (flat), a quarry (bare both times) and reflectance noise; masks and slopes."""
    pre = {b: np.full((n, size, size), VEG[_CANON[b]], np.float32) for b in S2_SUBSET}
    post = {b: v.copy() for b, v in pre.items()}
    masks = np.zeros((n, size, size), np.uint8)
    slope = np.full((n, size, size), 30.0, np.float32)
    for i in range(n):
        r, c, h, w = (*rng.integers(0, size // 2, 2), *rng.integers(6, size // 2, 2))
        for b in S2_SUBSET:
            post[b][i, r : r + h, c : c + w] = BARE[_CANON[b]]
        masks[i, r : r + h, c : c + w] = 1
        if i % 2:  # a harvest on flat ground: bare after, no landslide
            slope[i, :, : size // 4] = 0.0
            masks[i, :, : size // 4] = 0
            for b in S2_SUBSET:
                post[b][i, :, : size // 4] = BARE[_CANON[b]]
    for d in (pre, post):
        for b in d:
            d[b] += rng.normal(0, 0.005, d[b].shape).astype(np.float32)
    return pre, post, masks, slope


def _fit(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and far faster on a loaded shared machine
    try:
        _steps(model, x, y, steps)
    finally:
        torch.set_num_threads(threads)


def _steps(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(xt)["out"], yt)
        loss.backward()
        opt.step()
    with torch.no_grad():  # batch-norm statistics of the final weights (a few steps leave the running ones stale)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        model(xt)
    model.eval()


def _save(folder: Path, model: torch.nn.Module, kw: dict, names: list[str], size: int, **meta: object) -> Path:
    spec = SegmenterMeta("small_rau_net1", kw, 23, threshold=0.5, band_order=names, head="mono", channels=names)
    spec.patch_size = size
    spec.training_data = {"name": "map_event test patches", "kind": "synthetic", "fingerprint": "test"}
    for k, v in meta.items():
        setattr(spec, k, v)
    save_segmenter_files(model, spec, folder)
    return folder


def temporal_model(folder: Path, temporal: str = "pre-post", *, size: int = 32, steps: int = 30, seed: int = 0) -> Path:
    """A width-4 small RAU-Net trained for ``steps`` Adam steps on synthetic pre/post patches of the world's bands,
    with the channels ``imagery.data.sen12_temporal`` builds for ``temporal`` (``B02@pre``, ... ``slope``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pre, post, masks, slope = _scenes(8, size, rng)
    ndvi = {d: (v["B08"] - v["B04"]) / (v["B08"] + v["B04"]) for d, v in (("pre", pre), ("post", post))}
    arrays, names = s2_channels({**pre, "NDVI": ndvi["pre"]}, {**post, "NDVI": ndvi["post"]}, temporal, bands=S2_SUBSET)
    x = np.stack([*arrays, slope], axis=1).astype(np.float32)
    names = [*names, "slope"]
    kw = {"in_channels": len(names), "num_classes": 2, "head": "mono", "base_width": 4}
    model = create_model("small_rau_net1", **kw)
    _fit(model, x, masks, steps)
    return _save(folder, model, kw, names, size, temporal=temporal, sensor="s2")


def single_date_model(folder: Path, *, size: int = 32, steps: int = 5, seed: int = 0, **meta: object) -> Path:
    """A width-4 small RAU-Net on the world's bands of one date (L4S model units, channel set 14), a few steps."""
    from imagery.data.bands import to_model_units

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    _, post, masks, slope = _scenes(4, size, rng)
    bands = [*(_CANON[b] for b in S2_SUBSET), "slope"]
    raw = to_model_units(np.stack([*(post[b] for b in S2_SUBSET), slope], axis=1), bands)
    names = list(channel_names(14, bands))
    kw = {"in_channels": len(names), "num_classes": 2, "head": "mono", "base_width": 4}
    model = create_model("small_rau_net1", **kw)
    from imagery.transforms.preprocess import Preprocessor

    x = Preprocessor(14, None, bands=bands).features(raw).numpy()
    _fit(model, x, masks, steps)
    spec_folder = _save(folder, model, kw, bands, size, channel_set=14, channels=names, **meta)
    return spec_folder


def real_temporal_model(folder: Path, data: Path, temporal: str = "pre-post", *, steps: int = 8, seed: int = 0) -> Path:
    """A width-4 small RAU-Net trained for ``steps`` Adam steps on the Sen12Landslides patches of ``data`` (all S2
    bands, ``load_sen12_temporal``): a path test, not a model worth its name."""
    from imagery.data.sen12_temporal import load_sen12_temporal

    torch.manual_seed(seed)
    ps = load_sen12_temporal(data, temporal, "s2")
    names = list(ps.bands)
    kw = {"in_channels": len(names), "num_classes": 2, "head": "mono", "base_width": 4}
    model = create_model("small_rau_net1", **kw)
    _fit(model, np.asarray(ps.images), np.asarray(ps.masks), steps)
    spec = _save(folder, model, kw, names, int(ps.images.shape[-1]), temporal=temporal, sensor="s2")
    meta_path = spec / "model_meta.json"
    import json

    meta = json.loads(meta_path.read_text())
    meta["training_data"] = {"name": str(data), "kind": "real", "fingerprint": "test"}
    meta_path.write_text(json.dumps(meta))
    return spec
