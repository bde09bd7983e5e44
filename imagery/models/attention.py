"""Pluggable channel/spatial attention modules (spec ``rau-net.md`` section 2).

* ``"se"`` (:class:`SEAttention`): the attention the authors actually trained. GAP -> Dense(c -> c/2,
  SELU) -> Dense(c/2 -> c, sigmoid) -> channel-wise multiply. No residual, no max-pool.
  Trainable params c^2 + 1.5c.
* ``"triple_mha"`` (:class:`TripleMHA`): the ICIIT "proposed attention": three Keras-style multi-head
  self-attentions (6 heads, key_dim 12; q/k/v project d -> 72, output 72 -> d) over
  (i) the channel-mean map as H tokens of W features, (ii) the width-mean as H tokens of C features,
  (iii) the height-mean as W tokens of C features; each output is passed through a sigmoid, used as a
  gate (H x W, H x C, W x C) on x, and the three gated tensors are averaged. Branch (i) has W input
  features, so this module is built for one spatial size (``size``).
* ``"cbam"`` (:class:`CBAM`): as coded in the authors' ablation: channel part (GAP and GMP through a
  shared MLP c -> c/2 SELU -> c ReLU, summed, sigmoid), then spatial part (channel-mean and -max ->
  4x4 "same" conv -> sigmoid).
* ``"none"``: identity.

Inputs/outputs are ``(B, C, H, W)``; every module returns a tensor of the input's shape.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from imagery.models.blocks import SameConv2d

Attention = Literal["se", "triple_mha", "cbam", "none"]
ATTENTIONS: tuple[str, ...] = get_args(Attention)


class SEAttention(nn.Module):
    """Squeeze-and-excitation as trained by the authors (reduction 2, SELU, sigmoid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.act = nn.SELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]


class KerasMultiHeadSelfAttention(nn.Module):
    """Keras ``MultiHeadAttention(num_heads, key_dim)`` used as self-attention on (B, T, d) tokens.

    q, k, v: Linear(d -> heads*key_dim) each (value_dim = key_dim); output Linear(heads*key_dim -> d).
    Params: 4*d*heads*key_dim + 3*heads*key_dim + d. Scaled dot-product attention, no dropout.
    """

    def __init__(self, dim: int, num_heads: int = 6, key_dim: int = 12) -> None:
        super().__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        inner = num_heads * key_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, _ = tokens.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.num_heads, self.key_dim).transpose(1, 2)

        att = nn.functional.scaled_dot_product_attention(
            split(self.q(tokens)), split(self.k(tokens)), split(self.v(tokens))
        )
        return self.out(att.transpose(1, 2).reshape(b, t, self.num_heads * self.key_dim))


class TripleMHA(nn.Module):
    """The ICIIT "proposed attention" (mean pooling only, as in the landslide code)."""

    def __init__(self, channels: int, size: int, num_heads: int = 6, key_dim: int = 12) -> None:
        super().__init__()
        self.size = size
        self.spatial = KerasMultiHeadSelfAttention(size, num_heads, key_dim)  # H tokens x W feats
        self.height = KerasMultiHeadSelfAttention(channels, num_heads, key_dim)  # H tokens x C feats
        self.width = KerasMultiHeadSelfAttention(channels, num_heads, key_dim)  # W tokens x C feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(
                f"triple_mha attention was built for width {self.size}, got input width "
                f"{x.shape[-1]}; build the model with input_size={x.shape[-1]}"
            )
        g1 = torch.sigmoid(self.spatial(x.mean(dim=1)))[:, None]  # (B,1,H,W)
        g2 = torch.sigmoid(self.height(x.mean(dim=3).transpose(1, 2))).transpose(1, 2)  # (B,C,H)
        g3 = torch.sigmoid(self.width(x.mean(dim=2).transpose(1, 2))).transpose(1, 2)  # (B,C,W)
        return (x * g1 + x * g2[..., None] + x * g3[:, :, None, :]) / 3.0


class CBAM(nn.Module):
    """CBAM as coded in the authors' ablation (channel then spatial gate)."""

    def __init__(self, channels: int, kernel_size: int = 4) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SELU(), nn.Linear(hidden, channels), nn.ReLU())
        self.spatial = SameConv2d(2, 1, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch = torch.sigmoid(self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3))))
        x = x * ch[:, :, None, None]
        sp = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(sp))


def make_attention(kind: str, channels: int, size: int | None = None) -> nn.Module:
    """Attention module by name for a ``channels``-wide map of spatial width ``size`` (needed by
    ``triple_mha`` only). Raises ValueError for an unknown name."""
    if kind == "se":
        return SEAttention(channels)
    if kind == "triple_mha":
        if size is None:
            raise ValueError("attention='triple_mha' needs the spatial size of the feature map")
        return TripleMHA(channels, size)
    if kind == "cbam":
        return CBAM(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"attention={kind!r}: expected one of {', '.join(ATTENTIONS)}")
