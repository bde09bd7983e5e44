"""Which placement of attention in the traditional U-Net gives the deck's 31.6 M / 31.9 M / 31.8 M parameters?

The deck's "U-Net + SE / CBAM / proposed attention" rows (``../shared/design/rau-net.md`` section 3.4) are not
in the authors' code. This script counts the trainable parameters of every placement exactly: the U-Net
without attention is built once per input configuration, and each attention module (as the authors coded it:
``imagery.models.attention``) is built at the channel width and spatial size of each site.

* Structured placements: every non-empty union of the sites of ``imagery.models.unet.ATTENTION_SITES``
  (each site at every level), which ``create_model("unet", attention=..., attention_site="a+b")`` builds.
* Free placements: every subset of the 17 single sites (4 encoder levels, the bottleneck, 4 skips, 4 concats,
  4 decoder levels), the same placement for the three attentions.

Error of a placement = the largest of |count - deck| over SE, CBAM and the proposed attention.

    python benchmarks/unet_attention_placement.py [--top 10]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from imagery.models import count_parameters, create_model
from imagery.models.attention import make_attention
from imagery.models.unet import ATTENTION_SITES

DECK = {"se": 31.6e6, "cbam": 31.9e6, "triple_mha": 31.8e6}
CONFIGS = {"14 ch, single head (the deck's 31.4 M U-Net)": (14, "mono"), "23 ch, multi-res head": (23, "multires")}
WIDTHS = [64, 128, 256, 512, 1024]
SIZES = [128, 64, 32, 16, 8]


def single_sites() -> dict[str, tuple[str, int, int]]:
    """name -> (site kind, channels, spatial size) for the 17 single sites."""
    out: dict[str, tuple[str, int, int]] = {}
    for i in range(4):
        out[f"encoder{i}"] = ("encoder", WIDTHS[i], SIZES[i])
        out[f"skip{i}"] = ("skip", WIDTHS[i], SIZES[i])
        out[f"decoder_concat{i}"] = ("decoder_concat", WIDTHS[i + 1] + WIDTHS[i], SIZES[i])
        out[f"decoder{i}"] = ("decoder", WIDTHS[i], SIZES[i])
    out["bottleneck"] = ("bottleneck", WIDTHS[4], SIZES[4])
    return out


def module_params(kind: str, channels: int, size: int) -> int:
    return count_parameters(make_attention(kind, channels, size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    sites = single_sites()
    names = list(sites)
    per_site = {k: np.array([module_params(k, c, s) for _, c, s in sites.values()], dtype=np.int64) for k in DECK}
    print("module parameters per single site (SE, CBAM, proposed):")
    for j, n in enumerate(names):
        print(f"  {n:17s} c={sites[n][1]:5d} size={sites[n][2]:4d}: " + ", ".join(str(per_site[k][j]) for k in DECK))
    for label, (in_ch, head) in CONFIGS.items():
        base = count_parameters(create_model("unet", in_channels=in_ch, head=head))
        print(f"\n== {label}: U-Net without attention {base:,} ==")
        rows = []
        for r in range(1, len(ATTENTION_SITES) + 1):
            for combo in itertools.combinations(ATTENTION_SITES, r):
                sel = np.array([sites[n][0] in combo for n in names])
                counts = {k: base + int(per_site[k][sel].sum()) for k in DECK}
                err = max(abs(counts[k] - DECK[k]) for k in DECK)
                rows.append((err, "+".join(combo), counts))
        rows.sort(key=lambda t: t[0])
        print("structured placements (attention_site=...), best first:")
        for err, site, counts in rows[: args.top]:
            cells = "  ".join(f"{k} {counts[k] / 1e6:.3f} M ({(counts[k] - DECK[k]) / 1e6:+.3f})" for k in DECK)
            print(f"  {site:40s} max |diff| {err / 1e6:.3f} M   {cells}")
        # every subset of the 17 single sites, vectorised
        n = len(names)
        masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.int64)
        totals = {k: base + masks @ per_site[k] for k in DECK}
        err = np.max(np.stack([np.abs(totals[k] - DECK[k]) for k in DECK]), axis=0)
        best = int(np.argmin(err))
        chosen = [names[j] for j in range(n) if masks[best, j]]
        gap = int(np.max(np.abs(totals["cbam"] - totals["se"])))
        print(f"free placements ({2**n:,} subsets of {n} single sites): smallest max |diff| {err[best] / 1e6:.3f} M")
        print(f"  sites: {', '.join(chosen)}")
        print("  " + "  ".join(f"{k} {totals[k][best] / 1e6:.3f} M" for k in DECK))
        print(f"  within 0.1 M of all three: {int((err <= 1e5).sum())} subsets; largest CBAM - SE over all: {gap}")


if __name__ == "__main__":
    main()
