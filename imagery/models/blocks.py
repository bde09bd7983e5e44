"""Building blocks of the RAU-Net family with Keras (TF 2.8) defaults replicated.

Fidelity choices (spec ``rau-net.md`` section 1):

* LeakyReLU negative slope 0.3 (Keras default), not PyTorch's 0.01.
* BatchNorm ``eps=1e-3``, ``momentum=0.01`` (Keras momentum 0.99 expressed the PyTorch way).
* Every conv has a bias; biases start at zero. Conv / transposed-conv kernels use Keras'
  truncated He-normal in the RAU-Nets, Dense layers and 1x1 output convs use Glorot-uniform.
* Keras "same" padding with an even kernel pads 0 before and 1 after (top/left vs bottom/right);
  :class:`SameConv2d` reproduces it exactly, for any kernel size and stride.

All tensors are ``(B, C, H, W)`` float32 (channel-first); widths are channel counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.3
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
_TRUNC_STD_CORRECTION = 0.87962566103423978  # std of a unit normal truncated at +-2 (Keras)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with Keras' eps 1e-3 and momentum 0.99 (PyTorch momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def leaky_relu() -> nn.LeakyReLU:
    """LeakyReLU with Keras' default slope 0.3."""
    return nn.LeakyReLU(LEAKY_SLOPE)


def he_normal_(weight: torch.Tensor) -> None:
    """Keras ``he_normal``: truncated normal (+-2 std), std = sqrt(2 / fan_in) / 0.8796."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(2.0 / max(fan_in, 1)) / _TRUNC_STD_CORRECTION
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def keras_init(module: nn.Module, conv_init: str = "he_normal") -> None:
    """Initialise every conv / transposed conv / linear under ``module`` the Keras way.

    ``conv_init`` is ``"he_normal"`` (RAU-Nets) or ``"glorot_uniform"`` (Keras default, used by the
    baselines without explicit init). Linear layers always get Glorot-uniform. Biases are zeroed.
    BatchNorm keeps gamma 1 / beta 0. Modules flagged ``_glorot = True`` (1x1 output convs) get
    Glorot-uniform whatever ``conv_init`` says.
    """
    if conv_init not in ("he_normal", "glorot_uniform"):
        raise ValueError(f"conv_init={conv_init!r}: expected 'he_normal' or 'glorot_uniform'")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if conv_init == "he_normal" and not getattr(m, "_glorot", False):
                he_normal_(m.weight)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def output_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    """1x1 output conv flagged for Glorot-uniform init (Keras default for the heads)."""
    conv = nn.Conv2d(in_ch, out_ch, 1)
    conv._glorot = True  # type: ignore[attr-defined]
    return conv


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: total pad ``max(k - s, 0)`` (or size-dependent for
    stride > 1), split with the smaller half before (top/left) and the larger after (bottom/right)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_ch, out_ch, kernel_size, stride=stride, padding=0, dilation=dilation, groups=groups, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
            strict=False,
        ):
            eff = (k - 1) * d + 1
            out = -(-size // s)
            total = max((out - 1) * s + eff - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv_bn_act(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Sequential:
    """ "same" conv -> BN -> LeakyReLU(0.3)."""
    return nn.Sequential(SameConv2d(in_ch, out_ch, kernel_size), batch_norm(out_ch), leaky_relu())


class ResConvBlock(nn.Module):
    """The authors' "ConvolutionBlock" of width ``c`` (input must already have ``c`` channels).

    ``y = x + att(CBA3(CBA3(x) + CBA2(x)))`` with CBA_k = k x k "same" conv -> BN -> LeakyReLU(0.3)
    and ``att`` the pluggable attention (identity for ``"none"``). No projection shortcut.
    Trainable parameters: 22c^2 + 9c plus the attention's (SE: c^2 + 1.5c).
    """

    def __init__(self, channels: int, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.branch3 = conv_bn_act(channels, channels, 3)
        self.branch2 = conv_bn_act(channels, channels, 2)
        self.fuse = conv_bn_act(channels, channels, 3)
        self.attention = attention if attention is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(self.branch3(x) + self.branch2(x))
        return x + self.attention(y)


class Down(nn.Module):
    """2x2 conv, stride 2, same width, SELU (no BN, no pooling): (B,c,H,W) -> (B,c,H/2,W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 2, stride=2)
        self.act = nn.SELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.act(self.conv(x))


class Up(nn.Module):
    """2x2 transposed conv, stride 2, output width = input width, SELU: (B,c,H,W) -> (B,c,2H,2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.act = nn.SELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def crop_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop ``x`` spatially to ``ref``'s H, W (upsampled maps of odd-sized inputs are one px larger)."""
    return x[..., : ref.shape[-2], : ref.shape[-1]]
