"""Traditional U-Net baseline (authors' ``models/U_Net.py``; spec ``rau-net.md`` section 3.4).

Encoder widths F, 2F, 4F, 8F, 16F (F = 64: 64..1024); each level [3x3 conv -> BN -> LeakyReLU(0.3)] x 2,
then a 2x2 max-pool (4 pools; the deepest level has none). Decoder: 2x **nearest** upsampling (no conv)
-> concat [upsampled, skip] -> [3x3 conv -> BN -> LeakyReLU] x 2 at 8F/4F/2F/F. Dropout 0.2 -> head.
With 14 input channels and ``head="mono"`` it has 31,397,122 trainable parameters (deck: 31.4M).
Convs use Keras' default Glorot-uniform init (the authors set no initializer here).

Attention is an ablation only (the deck's U-Net + SE/CBAM/proposed attention are not in the authors' code and
their placement is unknown). ``attention_site`` (:data:`ATTENTION_SITES`, several joined by ``+``) places it:
``decoder`` (default: after each decoder level's double conv), ``encoder`` (after each encoder level's double
conv, above the bottleneck), ``bottleneck`` (after the deepest level), ``skip`` (on each skip connection,
before the concatenation), ``decoder_concat`` (on the concatenated map, before the decoder's double conv).

No placement reproduces the deck's 31.6 M / 31.9 M / 31.8 M (SE / CBAM / proposed) within 0.1 M with the
attention modules as the authors coded them: CBAM is SE plus one 4x4 spatial conv (33 parameters per site),
so CBAM - SE <= 33 x 17 = 561 parameters for any placement, while the deck has them 0.3 M apart. The closest
structured placements are ``encoder``, ``skip`` and ``decoder`` (equal counts; 14 channels, single head, the
deck's 31.4 M baseline): 31,746,722 / 31,746,854 / 32,023,954 against 31.6 / 31.9 / 31.8 M (differences
+0.147 / -0.153 / +0.224 M). Over all 131,072 subsets of the 17 single sites the best is attention after
encoder levels 1-3 only (31.743 / 31.743 / 31.949 M, at most 0.157 M off). ``benchmarks/unet_attention_placement.py``
lists every placement.
Input ``(B, in_channels, H, W)``; odd sizes are handled by cropping the upsampled maps.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from imagery.models.attention import make_attention
from imagery.models.blocks import conv_bn_act, crop_to, keras_init
from imagery.models.heads import SegHead

AttentionSite = Literal["decoder", "encoder", "bottleneck", "skip", "decoder_concat"]
ATTENTION_SITES: tuple[str, ...] = get_args(AttentionSite)


def parse_attention_site(site: str) -> frozenset[str]:
    """The sites of ``"a+b+..."``; ValueError naming a bad one."""
    parts = frozenset(p.strip() for p in str(site).split("+") if p.strip())
    bad = sorted(parts - set(ATTENTION_SITES))
    if bad or not parts:
        raise ValueError(f"attention_site={site!r}: expected one or more of {', '.join(ATTENTION_SITES)} joined by '+'")
    return parts


def _double(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_act(in_ch, out_ch, 3), conv_bn_act(out_ch, out_ch, 3))


class UNet(nn.Module):
    """Traditional U-Net; ``forward(x (B,C,H,W)) -> dict`` of logits (see ``heads.py``)."""

    def __init__(
        self,
        in_channels: int = 14,
        num_classes: int = 2,
        head: str = "mono",
        attention: str = "none",
        base_width: int = 64,
        depth: int = 4,
        dropout: float = 0.2,
        input_size: int = 128,
        attention_site: str = "decoder",
    ) -> None:
        super().__init__()
        sites = parse_attention_site(attention_site)
        if in_channels < 1 or base_width < 1 or depth < 1:
            raise ValueError(
                f"in_channels={in_channels}, base_width={base_width}, depth={depth}: expected positive values"
            )
        self.in_channels = in_channels
        widths = [base_width * 2**i for i in range(depth + 1)]
        sizes = [max(input_size // 2**i, 1) for i in range(depth + 1)]

        def att(site: str, c: int, size: int) -> nn.Module:
            return make_attention(attention, c, size) if site in sites else nn.Identity()

        self.enc = nn.ModuleList()
        self.enc_att = nn.ModuleList()
        prev = in_channels
        for i, w in enumerate(widths):
            self.enc.append(_double(prev, w))
            self.enc_att.append(att("encoder" if i < depth else "bottleneck", w, sizes[i]))
            prev = w
        self.skip_att = nn.ModuleList(att("skip", widths[i], sizes[i]) for i in range(depth))
        self.dec = nn.ModuleList()
        self.cat_att = nn.ModuleList()
        self.att = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.cat_att.append(att("decoder_concat", prev + widths[i], sizes[i]))
            self.dec.append(_double(prev + widths[i], widths[i]))
            self.att.append(att("decoder", widths[i], sizes[i]))
            prev = widths[i]
        self.out_channels = prev
        self.head = SegHead(prev, head, num_classes, dropout)
        keras_init(self, "glorot_uniform")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.in_channels}, H, W)")
        skips = []
        for i, (block, enc_att) in enumerate(zip(self.enc, self.enc_att, strict=True)):
            x = enc_att(block(x))
            if i < len(self.enc) - 1:
                skips.append(self.skip_att[i](x))
                x = F.max_pool2d(x, 2, ceil_mode=True)
        for block, cat_att, att, skip in zip(self.dec, self.cat_att, self.att, reversed(skips), strict=False):
            up = crop_to(F.interpolate(x, scale_factor=2.0, mode="nearest"), skip)
            x = att(block(cat_att(torch.cat([up, skip], dim=1))))
        return self.head(x)
