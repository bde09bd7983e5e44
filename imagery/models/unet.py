"""Traditional U-Net baseline (authors' ``models/U_Net.py``; spec ``rau-net.md`` section 3.4).

Encoder widths F, 2F, 4F, 8F, 16F (F = 64: 64..1024); each level [3x3 conv -> BN -> LeakyReLU(0.3)] x 2,
then a 2x2 max-pool (4 pools; the deepest level has none). Decoder: 2x **nearest** upsampling (no conv)
-> concat [upsampled, skip] -> [3x3 conv -> BN -> LeakyReLU] x 2 at 8F/4F/2F/F. Dropout 0.2 -> head.
With 14 input channels and ``head="mono"`` it has 31,397,122 trainable parameters (deck: 31.4M).
Convs use Keras' default Glorot-uniform init (the authors set no initializer here).

Attention is an ablation only (the deck's U-Net + SE/CBAM/proposed attention are not in the code and
their placement is unknown): when not ``"none"`` it is applied after each decoder level's double conv.
Input ``(B, in_channels, H, W)``; odd sizes are handled by cropping the upsampled maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imagery.models.attention import make_attention
from imagery.models.blocks import conv_bn_act, crop_to, keras_init
from imagery.models.heads import SegHead


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
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_width < 1 or depth < 1:
            raise ValueError(
                f"in_channels={in_channels}, base_width={base_width}, depth={depth}: expected positive values"
            )
        self.in_channels = in_channels
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.enc.append(_double(prev, w))
            prev = w
        self.dec = nn.ModuleList()
        self.att = nn.ModuleList()
        for i in range(depth - 1, -1, -1):
            self.dec.append(_double(prev + widths[i], widths[i]))
            self.att.append(make_attention(attention, widths[i], max(input_size // 2**i, 1)))
            prev = widths[i]
        self.out_channels = prev
        self.head = SegHead(prev, head, num_classes, dropout)
        keras_init(self, "glorot_uniform")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.in_channels}, H, W)")
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.enc) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2, ceil_mode=True)
        for block, att, skip in zip(self.dec, self.att, reversed(skips), strict=False):
            up = crop_to(F.interpolate(x, scale_factor=2.0, mode="nearest"), skip)
            x = att(block(torch.cat([up, skip], dim=1)))
        return self.head(x)
