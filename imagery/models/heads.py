"""Segmentation heads shared by every model of the family (spec ``rau-net.md`` sections 2, 3.5).

A head maps the final full-resolution feature map ``(B, C_in, H, W)`` to a dict of LOGITS
(pre-softmax; the authors' softmax is left to the losses/post-processing):

* ``"mono"``: Dropout -> 1x1 conv -> ``"out"`` ``(B, K, H, W)``.
* ``"multires"`` (the authors' SegHead): Dropout, then three branches on the same features:
  ``"out_256"`` ``(B, K, 2H, 2W)``: 3x3 transposed conv stride 2 (-> 64 ch, ReLU) -> 1x1 conv;
  ``"out"`` ``(B, K, H, W)``: 1x1 conv; ``"out_64"`` ``(B, K, H/2, W/2)``: 3x3 "same" conv stride 2
  (-> 64 ch, ReLU) -> 1x1 conv. Params for C_in = 640, K = 2: 738,950.
* ``"dual"``: the mono head plus an image-level branch (a proposal; the authors' code has none):
  global average pool of the (pre-dropout) features -> Linear(C_in -> 64, ReLU) -> Linear(64 -> 1)
  -> ``"patch_logit"`` ``(B,)`` (logit of "the patch contains a landslide").
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from imagery.models.blocks import SameConv2d, output_conv

Head = Literal["multires", "mono", "dual"]
HEADS: tuple[str, ...] = get_args(Head)


class SegHead(nn.Module):
    """Mono / multi-resolution / dual head on a ``(B, in_channels, H, W)`` feature map."""

    def __init__(
        self,
        in_channels: int,
        head: str = "multires",
        num_classes: int = 2,
        dropout: float = 0.25,
        mid_channels: int = 64,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head={head!r}: expected one of {', '.join(HEADS)}")
        self.head = head
        self.dropout = nn.Dropout(dropout)
        self.out = output_conv(in_channels, num_classes)
        if head == "multires":
            self.up = nn.Sequential(
                nn.ConvTranspose2d(in_channels, mid_channels, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
                output_conv(mid_channels, num_classes),
            )
            self.down = nn.Sequential(
                SameConv2d(in_channels, mid_channels, 3, stride=2), nn.ReLU(), output_conv(mid_channels, num_classes)
            )
        if head == "dual":
            self.patch = nn.Sequential(nn.Linear(in_channels, mid_channels), nn.ReLU(), nn.Linear(mid_channels, 1))

    def forward(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.dropout(feats)
        outputs = {"out": self.out(x)}
        if self.head == "multires":
            outputs["out_256"] = self.up(x)
            outputs["out_64"] = self.down(x)
        elif self.head == "dual":
            outputs["patch_logit"] = self.patch(feats.mean(dim=(2, 3))).squeeze(1)
        return outputs


def patch_probability(outputs: dict[str, torch.Tensor], pool: int = 3) -> torch.Tensor:
    """Image-level landslide probability ``(B,)`` from a model's output dict of logits.

    * Dual head: ``sigmoid(outputs["patch_logit"])``.
    * Otherwise (documented rule): the landslide softmax probability of the 128-px map ``"out"``
      is averaged over ``pool x pool`` windows (stride 1, borders averaged over the valid pixels only)
      and the maximum over the image is returned. A single confident pixel therefore scores at most
      about 1/9 more than its neighbours, so one noisy pixel does not fire; a blob of at least
      ``pool x pool`` confident pixels does.
    """
    if "patch_logit" in outputs:
        return torch.sigmoid(outputs["patch_logit"].float())
    if "out" not in outputs:
        raise ValueError(f"outputs has keys {sorted(outputs)}; expected 'out' or 'patch_logit'")
    prob = torch.softmax(outputs["out"].float(), dim=1)[:, 1:2]
    if pool > 1:
        prob = nn.functional.avg_pool2d(prob, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return prob.flatten(1).amax(dim=1)
