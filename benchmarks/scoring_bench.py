"""Speed of fused region scoring on CPU: regions/s with and without imagery, and a batch-size sweep.

Measured (best of ``--repeats`` runs, after one warm-up):

* tabular + fusion: :meth:`fusion.scoring.RegionScorer.score_batch` on ``--n-tabular`` synthetic regions
  (LightGBM model + stacker + cross-check), without SHAP reasons (``top_k=0``) and with the top-3
  SHAP reasons, per batch size; plus the whole :func:`fusion.scoring.score_table` to CSV.
* imagery: the bare segmenter (``Segmenter.predict`` on in-memory patches) against the fused scorer on the
  same patches (segmenter + region features + tabular + stacker + cross-check; no mask PNGs), per
  segmenter batch size; the target is fused >= 90% of the bare speed.

``python benchmarks/scoring_bench.py [--n-tabular 100000] [--n-patches 64] [--patch-size 128]``
prints a Markdown table (paste into ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"


def build_models(n_train: int, seed: int) -> tuple[object, object, pd.DataFrame]:
    from fusion.stacking import StackingFuser
    from tabular.config import LGBMParams
    from tabular.model import LandslideClassifier
    from tabular.synthetic import FEATURE_COLUMNS, make_region_table

    table = make_region_table(n_train, seed=seed)
    clf = LandslideClassifier(LGBMParams(num_boost_round=200, early_stopping_rounds=0), seed=seed)
    clf.fit(table[list(FEATURE_COLUMNS)], table["landslide"].to_numpy())
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    X = pd.DataFrame(
        {
            "p_tabular": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 2000), 0.01, 0.99),
            "p_imagery": np.clip(0.2 + 0.6 * y + rng.normal(0, 0.25, 2000), 0.01, 0.99),
        }
    )
    return clf, StackingFuser().fit(X, y), table


def bench_tabular(n: int, batch_sizes: list[int], repeats: int, seed: int) -> list[dict[str, object]]:
    from fusion.scoring import RegionScorer, ScoringConfig, score_table
    from tabular.synthetic import make_region_table

    clf, fuser, _ = build_models(2000, seed)
    regions = make_region_table(n, seed=seed + 1)
    rows = []
    for top_k in (0, 3):
        for bs in batch_sizes:
            scorer = RegionScorer(clf, None, fuser, ScoringConfig(batch_size=bs, top_k=top_k, write_masks=False))

            def run(scorer: RegionScorer = scorer, bs: int = bs) -> None:
                for s in range(0, n, bs):
                    scorer.score_batch(regions.iloc[s : s + bs])

            t = best_time(run, repeats)
            rows.append(
                {
                    "what": f"tabular+fusion, in memory{', top-3 SHAP' if top_k else ''}",
                    "batch": bs,
                    "regions": n,
                    "seconds": t,
                    "regions_per_s": n / t,
                }
            )
    with tempfile.TemporaryDirectory() as tmp:
        bs = max(batch_sizes)
        scorer = RegionScorer(clf, None, fuser, ScoringConfig(batch_size=bs, top_k=0, write_masks=False))
        t = best_time(lambda: score_table(regions, scorer, Path(tmp) / "s.csv", progress=False), repeats)
        rows.append(
            {
                "what": "tabular+fusion, score_table to CSV",
                "batch": bs,
                "regions": n,
                "seconds": t,
                "regions_per_s": n / t,
            }
        )
    return rows


def bench_imagery(
    n: int, size: int, width: int, batch_sizes: list[int], repeats: int, seed: int
) -> list[dict[str, object]]:
    import torch

    from fusion.scoring import RegionScorer, ScoringConfig
    from imagery.data.bands import BANDS
    from imagery.data.synthetic import synth_patch
    from imagery.inference import Segmenter, SegmenterMeta
    from imagery.models import create_model
    from tabular.synthetic import make_region_table

    torch.manual_seed(seed)
    kwargs = {"in_channels": 14, "num_classes": 2, "head": "mono", "base_width": width}
    seg = Segmenter(
        create_model("unet", **kwargs), SegmenterMeta("unet", kwargs, 14, band_order=list(BANDS), head="mono"), "cpu"
    )
    rng = np.random.default_rng(seed)
    images = np.stack([synth_patch(rng, has_landslide=i % 2 == 0, size=size)[0] for i in range(n)])
    clf, fuser, _ = build_models(2000, seed)
    regions = make_region_table(n, seed=seed + 2)
    has = np.ones(n, dtype=bool)
    rows = []
    for bs in batch_sizes:
        bare = best_time(lambda bs=bs: seg.predict(images, batch_size=bs), repeats)
        scorer = RegionScorer(
            clf, seg, fuser, ScoringConfig(batch_size=n, imagery_batch_size=bs, top_k=0, write_masks=False)
        )
        fused = best_time(lambda scorer=scorer: scorer.score_batch(regions, images, has, None, None), repeats)
        rows.append(
            {
                "what": f"imagery bare Segmenter.predict ({size}px, unet width {width})",
                "batch": bs,
                "regions": n,
                "seconds": bare,
                "regions_per_s": n / bare,
            }
        )
        rows.append(
            {
                "what": "imagery fused scoring (segmenter + features + tabular + stacker)",
                "batch": bs,
                "regions": n,
                "seconds": fused,
                "regions_per_s": n / fused,
                "fused_vs_bare": bare / fused,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-tabular", type=int, default=100_000)
    p.add_argument("--tab-batches", default="1024,8192,32768")
    p.add_argument("--n-patches", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--img-batches", default="8,16,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = bench_tabular(args.n_tabular, [int(b) for b in args.tab_batches.split(",")], args.repeats, args.seed)
    rows += bench_imagery(
        args.n_patches,
        args.patch_size,
        args.width,
        [int(b) for b in args.img_batches.split(",")],
        args.repeats,
        args.seed,
    )
    df = pd.DataFrame(rows)
    print(f"machine: {machine()}\n")
    print("| what | batch | regions | seconds | regions/s | fused/bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in df.itertuples(index=False):
        ratio = getattr(r, "fused_vs_bare", np.nan)
        print(
            f"| {r.what} | {r.batch} | {r.regions} | {r.seconds:.3f} | {r.regions_per_s:,.0f} | "
            f"{'' if pd.isna(ratio) else f'{ratio:.2f}'} |"
        )


if __name__ == "__main__":
    main()
