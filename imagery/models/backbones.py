"""Comparison backbones: DeepLabV3 (ASPP) on a MobileNetV3-Large or EfficientNet-B0 encoder.

Decision (documented): the seed's table compares against DeepLabV3 / MobileNetV3 / EfficientNet models
usually taken from segmentation-models-pytorch with timm encoders. Those libraries need torchvision,
and PyPI has no CPU torchvision build for torch 2.13, so timm and smp cannot be imported here. The two
encoders are therefore written compactly from the papers' block definitions, with ``in_channels`` set
on the stem and no pretrained weights (L4S has 14-26 channels, so ImageNet weights would not load
unchanged anyway):

* MobileNetV3-Large (Howard et al. 2019, table 1): 3x3 s2 stem (16, hard-swish), then 15 inverted
  residual "bneck" blocks [1x1 expand -> BN -> act, k x k depthwise -> BN -> act, optional SE
  (squeeze to expand/4 rounded to 8, ReLU, hard-sigmoid), 1x1 project -> BN, identity shortcut when
  stride 1 and widths match]; act = ReLU or hard-swish as in the table.
* EfficientNet-B0 (Tan & Le 2019, table 1): 3x3 s2 stem (32, SiLU), then MBConv stages
  (expand, kernel, stride, width, repeats) = (1,3,1,16,1) (6,3,2,24,2) (6,5,2,40,2) (6,3,2,80,3)
  (6,5,1,112,3) (6,5,2,192,4) (6,3,1,320,1); SE squeezes to in/4 with SiLU and sigmoid.
  Stochastic depth is omitted.
* Both run at output stride 8 (later strides replaced by dilation, as in DeepLabV3), so a 128-px
  patch gives 16x16 features. DeepLabV3 decoder (Chen et al. 2017): ASPP = 1x1 conv, three 3x3
  atrous convs (rates 3/6/9: the paper's 12/24/36 at OS 8 for 65x65 maps, scaled to 16x16 maps) and
  image pooling, each -> BN -> ReLU, concat -> 1x1 -> BN -> ReLU -> Dropout 0.5, then 3x3 conv -> BN
  -> ReLU. The ``aspp_channels`` (default 256) map is upsampled bilinearly to the input size and fed
  to the family's shared head (``mono`` / ``multires`` / ``dual``, dropout 0.1), so all heads work.
* ``width_mult`` scales every encoder width (rounded to multiples of 8), for tiny test models.

Input ``(B, in_channels, H, W)``; output dict of logits as every model of the registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imagery.models.blocks import batch_norm
from imagery.models.heads import SegHead

# MobileNetV3-Large: (kernel, expand, out, se, activation, stride)
MOBILENETV3_LARGE = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
]
# EfficientNet-B0: (expand, kernel, stride, out, repeats)
EFFICIENTNET_B0 = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going below 90% of it."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "hswish": nn.Hardswish(), "silu": nn.SiLU()}[name]


class SqueezeExcite(nn.Module):
    """SE gate: GAP -> 1x1 (squeeze) -> act -> 1x1 -> gate -> multiply."""

    def __init__(self, channels: int, squeeze: int, act: str, gate: str) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act = _act(act)
        self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


def _cba(
    in_ch: int, out_ch: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1, act: str | None = "relu"
) -> nn.Sequential:
    pad = (k - 1) // 2 * dilation
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, k, stride, pad, dilation, groups, bias=False),
        batch_norm(out_ch),
    ]
    if act:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck / EfficientNet MBConv block (expand -> depthwise -> SE -> project)."""

    def __init__(
        self,
        in_ch: int,
        exp: int,
        out_ch: int,
        k: int,
        stride: int,
        dilation: int,
        act: str,
        se_squeeze: int | None,
        se_act: str,
        se_gate: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != in_ch:
            layers.append(_cba(in_ch, exp, 1, act=act))
        layers.append(_cba(exp, exp, k, stride, dilation, groups=exp, act=act))
        if se_squeeze:
            layers.append(SqueezeExcite(exp, se_squeeze, se_act, se_gate))
        layers.append(_cba(exp, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class _Dilator:
    """Turns strides beyond ``output_stride`` into dilation (DeepLab)."""

    def __init__(self, output_stride: int, current: int = 2) -> None:
        self.output_stride, self.current, self.dilation = output_stride, current, 1

    def __call__(self, stride: int) -> tuple[int, int]:
        if stride > 1 and self.current >= self.output_stride:
            self.dilation *= stride
            return 1, self.dilation
        self.current *= stride
        return stride, self.dilation


def mobilenetv3_large(in_channels: int, width_mult: float = 1.0, output_stride: int = 8) -> tuple[nn.Module, int]:
    """MobileNetV3-Large feature extractor (no final 1x1/pooling/classifier); returns (module, out channels)."""
    stem = make_divisible(16 * width_mult)
    layers: list[nn.Module] = [_cba(in_channels, stem, 3, 2, act="hswish")]
    dil, prev = _Dilator(output_stride), stem
    for k, exp, out, se, act, stride in MOBILENETV3_LARGE:
        e, o = make_divisible(exp * width_mult), make_divisible(out * width_mult)
        s, d = dil(stride)
        layers.append(
            InvertedResidual(prev, e, o, k, s, d, act, make_divisible(e / 4) if se else None, "relu", "hsigmoid")
        )
        prev = o
    return nn.Sequential(*layers), prev


def efficientnet_b0(in_channels: int, width_mult: float = 1.0, output_stride: int = 8) -> tuple[nn.Module, int]:
    """EfficientNet-B0 feature extractor (no head conv/pooling/classifier); returns (module, out channels)."""
    stem = make_divisible(32 * width_mult)
    layers: list[nn.Module] = [_cba(in_channels, stem, 3, 2, act="silu")]
    dil, prev = _Dilator(output_stride), stem
    for exp, k, stride, out, repeats in EFFICIENTNET_B0:
        o = make_divisible(out * width_mult)
        for r in range(repeats):
            s, d = dil(stride if r == 0 else 1)
            layers.append(InvertedResidual(prev, prev * exp, o, k, s, d, "silu", max(1, prev // 4), "silu", "sigmoid"))
            prev = o
    return nn.Sequential(*layers), prev


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): (B, C_in, h, w) -> (B, C_out, h, w)."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...] = (3, 6, 9)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_cba(in_ch, out_ch, 1)] + [_cba(in_ch, out_ch, 3, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.ReLU())
        self.project = nn.Sequential(_cba(out_ch * (len(rates) + 2), out_ch, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(feats, dim=1))


class DeepLabV3(nn.Module):
    """DeepLabV3 on a compact MobileNetV3-Large / EfficientNet-B0 encoder (see module docstring)."""

    def __init__(
        self,
        encoder: str,
        in_channels: int = 23,
        num_classes: int = 2,
        head: str = "multires",
        width_mult: float = 1.0,
        aspp_channels: int = 256,
        dropout: float = 0.1,
        rates: tuple[int, ...] = (3, 6, 9),
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        builders = {"mobilenetv3": mobilenetv3_large, "efficientnet": efficientnet_b0}
        if encoder not in builders:
            raise ValueError(f"encoder={encoder!r}: expected one of {', '.join(builders)}")
        self.in_channels = in_channels
        self.encoder, enc_ch = builders[encoder](in_channels, width_mult)
        self.aspp = ASPP(enc_ch, aspp_channels, tuple(rates))
        self.decoder = _cba(aspp_channels, aspp_channels, 3)
        self.head = SegHead(aspp_channels, head, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.in_channels}, H, W)")
        feats = self.decoder(self.aspp(self.encoder(x)))
        feats = F.interpolate(feats, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(feats)
