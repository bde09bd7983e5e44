"""Tile size and overlap: accuracy cost against compute (issue 22, "Tiles and overlap").

For tile 128 / 256 x overlap 16 / 32 / 64 (``--tiles``, ``--overlaps``) on two scenes:

* ``l4s``: a 512 x 512 px mosaic of the real L4S patches (``../shared/data/landslide4sense_camduc``; 4 x 4,
  the 11 patches repeated with rotations), skipped when the data is absent;
* ``synthetic``: a 512 x 512 px mosaic of the project's synthetic patches (``imagery.data.synthetic``).

The model is the seam test's (``tests/imagery/test_seams.py``): a fixed-seed small RAU-Net 1 of width 8 whose
logits are scaled so that its probabilities spread over 0-1 like a trained model's. Measured per setting:

* ``seam p99``: the scene predicted whole and cropped by 64 px (a multiple of the network's stride), 99th
  percentile of the absolute difference away from the edges (the seam test's measure; its bound is 0.10);
* ``p99 vs one pass`` and ``F1 vs one pass``: against the **no-seam reference**, the whole scene through the
  network in one forward pass (no tiles at all; the network is fully convolutional): the 99th percentile
  of the probability difference and the F1 of the mask at 0.5 taking the one-pass mask as the truth;
* compute: the network pixels a full 10,980 x 10,980 tile costs (tiles x tile^2 / scene pixels, exact from
  ``tile_starts``) and the measured seconds of the tiled prediction of this scene (best of ``--repeats``, same run).

The model's channels are normalised per tile (``Preprocessor``), so the one-pass reference also differs by
the context of that normalisation, not only by seams: larger tiles come closer to it.

Usage::

    python benchmarks/tiling_bench.py [--tiles 128 256] [--overlaps 16 32 64] [--size 512] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from imagery.data.bands import BANDS  # noqa: E402
from imagery.data.synthetic import synth_patch  # noqa: E402
from imagery.inference import SegmenterMeta  # noqa: E402
from imagery.inference.predict import predict_scene, tile_starts  # noqa: E402
from imagery.inference.segmenter import Segmenter  # noqa: E402
from imagery.models import create_model  # noqa: E402
from imagery.transforms.features import channel_names  # noqa: E402

CROP, MARGIN, TILE_PX = 64, 32, 10980
DATA = ROOT.parent / "shared" / "data" / "landslide4sense_camduc"


def seam_model() -> Segmenter:
    """The seam test's model: width-8 small RAU-Net 1, seed 0, last conv x3 (probabilities spread over 0-1)."""
    ch = list(channel_names(23, list(BANDS)))
    torch.manual_seed(0)
    kw = {"in_channels": len(ch), "num_classes": 2, "head": "mono", "base_width": 8}
    model = create_model("small_rau_net1", **kw)
    last = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 2][-1]
    with torch.no_grad():
        last.weight.mul_(3.0)
        last.bias.zero_()
    meta = SegmenterMeta("small_rau_net1", kw, 23, band_order=list(BANDS), head="mono", channels=ch)
    return Segmenter(model, meta, "cpu")


def mosaic(patches: list[np.ndarray], n: int) -> np.ndarray:
    """``(14, n*128, n*128)``: ``patches`` repeated (rotated by 90 degrees on each reuse) in an n x n grid."""
    tiles = [np.rot90(patches[i % len(patches)], k=i // len(patches), axes=(1, 2)) for i in range(n * n)]
    return np.ascontiguousarray(
        np.concatenate([np.concatenate(tiles[r * n : r * n + n], axis=2) for r in range(n)], axis=1)
    )


def scenes(size: int) -> dict[str, np.ndarray]:
    n = size // 128
    out = {}
    if (DATA / "img").is_dir():
        from imagery.data import load_patches  # noqa: PLC0415

        imgs = np.asarray(load_patches(str(DATA), layout="plain").images)
        out["l4s"] = mosaic(list(imgs), n)
    rng = np.random.default_rng(0)
    out["synthetic"] = mosaic([synth_patch(rng, has_landslide=i % 2 == 0)[0] for i in range(n * n)], n)
    return out


def f1(ref: np.ndarray, other: np.ndarray) -> float:
    tp = int((ref & other).sum())
    den = int(ref.sum()) + int(other.sum())
    return 1.0 if den == 0 else 2 * tp / den


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    p.add_argument("--overlaps", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--size", type=int, default=512, help="scene side, px (a multiple of 128)")
    p.add_argument("--repeats", type=int, default=1, help="timed predictions per setting (best kept)")
    args = p.parse_args()
    print(f"load average at the start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    seg = seam_model()

    def fn(b: np.ndarray) -> np.ndarray:
        return seg.predict(b)["prob"]

    print(
        "| scene | tile | overlap | tiles for a 10980 px tile | network px / scene px | seam p99 | p99 vs one pass "
        "| F1 vs one pass | seconds (this scene) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, raw in scenes(args.size).items():
        one_pass = fn(raw[None])[0]  # the no-seam reference: no tiles
        assert one_pass.std() > 0.1, "the model's probabilities must spread for a seam to show"
        m = MARGIN
        for tile in args.tiles:
            for overlap in args.overlaps:
                if not 0 <= overlap < tile:
                    continue
                best = float("inf")
                for _ in range(max(1, args.repeats)):
                    t0 = time.perf_counter()
                    whole = predict_scene(fn, raw, tile=tile, overlap=overlap)
                    best = min(best, time.perf_counter() - t0)
                cropped = predict_scene(fn, raw[:, CROP:, CROP:], tile=tile, overlap=overlap)
                seam = np.percentile(np.abs(whole[CROP + m : -m, CROP + m : -m] - cropped[m:-m, m:-m]), 99)
                diff = np.percentile(np.abs(whole[m:-m, m:-m] - one_pass[m:-m, m:-m]), 99)
                agree = f1(one_pass > 0.5, whole > 0.5)
                n_tiles = len(tile_starts(TILE_PX, tile, overlap)) ** 2
                cost = n_tiles * tile * tile / TILE_PX**2
                print(
                    f"| {name} | {tile} | {overlap} | {n_tiles:,} | {cost:.2f} | {seam:.3f} | {diff:.3f} | "
                    f"{agree:.4f} | {best:.1f} |",
                    flush=True,
                )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
