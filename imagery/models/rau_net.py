"""RAU-Net 1 / RAU-Net 2 / small RAU-Net 1 and the residual U-Net (spec ``rau-net.md`` section 3).

One configurable skeleton, :class:`ResAttUNet`, covers the four authors' models:

* stem -> ``depth`` encoder levels [ResConv(F) (+ attention) -> skip; Down(F)] -> optional
  bottleneck ResConv(F) -> ``depth`` decoder levels [Up(c) -> concat(up, skip) -> (attention over
  the concatenation, RAU-Net 2) -> ResConv(c + F) (+ attention, RAU-Net 1)] -> Dropout -> head.
* The encoder keeps F channels at every level; decoder widths grow by F per level
  (F = 128: 256, 384, 512, 640). Input ``(B, in_channels, H, W)``; H and W need not be multiples
  of 16 (odd maps are padded before a Down and cropped after an Up), but ``triple_mha`` attention is
  built for one input size (``input_size``, default 128).

Presets (see :data:`PRESETS`): ``rau_net1`` (SE inside every ResConv, BN+LeakyReLU stem, the dead
bottleneck omitted as in the authors' code, dropout 0.25, He-normal init), ``rau_net2`` (SE over the
concatenated decoder maps only), ``res_unet`` ("our convolution blocks": SELU stem without BN, no
attention, bottleneck used, dropout 0.2, Keras default Glorot init); ``small_*`` = F 40.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from imagery.models.attention import make_attention
from imagery.models.blocks import Down, ResConvBlock, SameConv2d, Up, batch_norm, crop_to, keras_init, leaky_relu
from imagery.models.heads import SegHead


@dataclass(frozen=True)
class ResAttUNetConfig:
    """Typed configuration of :class:`ResAttUNet` (widths in channels, sizes in pixels)."""

    in_channels: int = 23
    num_classes: int = 2
    base_width: int = 128
    depth: int = 4
    head: str = "multires"
    attention: str = "se"
    attention_site: str = "block"  # "block" (RAU-Net 1) | "decoder_concat" (RAU-Net 2)
    use_bottleneck: bool = False
    stem: str = "bn_leaky"  # "bn_leaky" (RAU-Nets) | "selu" (residual U-Net)
    dropout: float = 0.25
    conv_init: str = "he_normal"
    input_size: int = 128  # spatial size the triple_mha attention is built for


PRESETS: dict[str, ResAttUNetConfig] = {
    "rau_net1": ResAttUNetConfig(),
    "rau_net2": ResAttUNetConfig(attention_site="decoder_concat"),
    "small_rau_net1": ResAttUNetConfig(base_width=40),
    "res_unet": ResAttUNetConfig(
        attention="none", use_bottleneck=True, stem="selu", dropout=0.2, conv_init="glorot_uniform"
    ),
    "small_res_unet": ResAttUNetConfig(
        base_width=40, attention="none", use_bottleneck=True, stem="selu", dropout=0.2, conv_init="glorot_uniform"
    ),
}


class ResAttUNet(nn.Module):
    """Residual-attention U-Net; ``forward(x (B,C,H,W)) -> dict`` of logits (see ``heads.py``)."""

    def __init__(self, cfg: ResAttUNetConfig) -> None:
        super().__init__()
        if cfg.attention_site not in ("block", "decoder_concat"):
            raise ValueError(f"attention_site={cfg.attention_site!r}: expected 'block' or 'decoder_concat'")
        if cfg.in_channels < 1 or cfg.base_width < 2 or cfg.depth < 1:
            raise ValueError(
                f"in_channels={cfg.in_channels}, base_width={cfg.base_width}, depth={cfg.depth}: "
                "expected in_channels >= 1, base_width >= 2, depth >= 1"
            )
        self.cfg = cfg
        f = cfg.base_width
        if cfg.stem == "bn_leaky":
            self.stem = nn.Sequential(SameConv2d(cfg.in_channels, f, 3), batch_norm(f), leaky_relu())
        elif cfg.stem == "selu":
            self.stem = nn.Sequential(SameConv2d(cfg.in_channels, f, 3), nn.SELU())
        else:
            raise ValueError(f"stem={cfg.stem!r}: expected 'bn_leaky' or 'selu'")

        def block_att(c: int, size: int) -> nn.Module | None:
            if cfg.attention_site != "block":
                return None
            return make_attention(cfg.attention, c, size)

        sizes = [max(cfg.input_size // 2**i, 1) for i in range(cfg.depth + 1)]
        self.enc = nn.ModuleList(ResConvBlock(f, block_att(f, sizes[i])) for i in range(cfg.depth))
        self.downs = nn.ModuleList(Down(f) for _ in range(cfg.depth))
        self.bottleneck = ResConvBlock(f, block_att(f, sizes[-1])) if cfg.use_bottleneck else nn.Identity()
        self.ups = nn.ModuleList()
        self.concat_att = nn.ModuleList()
        self.dec = nn.ModuleList()
        c = f
        for j in range(cfg.depth):
            size = sizes[cfg.depth - 1 - j]
            self.ups.append(Up(c))
            c += f
            self.concat_att.append(
                make_attention(cfg.attention, c, size) if cfg.attention_site == "decoder_concat" else nn.Identity()
            )
            self.dec.append(ResConvBlock(c, block_att(c, size)))
        self.out_channels = c
        self.head = SegHead(c, cfg.head, cfg.num_classes, cfg.dropout)
        keras_init(self, cfg.conv_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.cfg.in_channels}, H, W)")
        x = self.stem(x)
        skips = []
        for block, down in zip(self.enc, self.downs, strict=False):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, att, block, skip in zip(self.ups, self.concat_att, self.dec, reversed(skips), strict=False):
            x = torch.cat([crop_to(up(x), skip), skip], dim=1)
            x = block(att(x))
        return self.head(x)


def build_res_att_unet(preset: str, **overrides: object) -> ResAttUNet:
    """Build a preset of :data:`PRESETS` with field overrides (``None`` values keep the preset)."""
    if preset not in PRESETS:
        raise ValueError(f"model {preset!r}: expected one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    known = set(cfg.__dataclass_fields__)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(
            f"model {preset!r}: unknown option(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
        )
    return ResAttUNet(replace(cfg, **{k: v for k, v in overrides.items() if v is not None}))
