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

Inference that reads only the 128-px map (every path but ``vote=True`` post-processing) runs under
:func:`main_output_only`: in eval mode the multi-resolution head then returns ``{"out": ...}`` alone and
its 256 / 64 px branches are not computed, with the same ``"out"`` to the bit. They are 11 % of the small
RAU-Net 1's FLOPs (4.7 of 41.8 GFLOP per 128 px patch) and 39 % of the width-8 model's (0.96 of 2.5), and
more of its time: the 256 px branch writes a ``(B, 64, 256, 256)`` map whatever the width (bf16, batch 8,
2 threads, Xeon with AMX: 1.16x faster for the small model, 2.4x for width 8; ``benchmarks/RESULTS.md``).
Training always computes every output (the multi-resolution loss needs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, get_args

import torch
from torch import nn

from imagery.models.blocks import SameConv2d, output_conv

Head = Literal["multires", "mono", "dual"]
HEADS: tuple[str, ...] = get_args(Head)
_MAIN_ONLY: ContextVar[bool] = ContextVar("seg_head_main_only", default=False)


@contextmanager
def main_output_only() -> Iterator[None]:
    """Within the block, a head in eval mode computes only ``"out"`` (module docstring): for inference
    that reads the 128-px map alone. The setting is per thread / task (a :class:`contextvars.ContextVar`)."""
    token = _MAIN_ONLY.set(True)
    try:
        yield
    finally:
        _MAIN_ONLY.reset(token)


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
        if self.head == "multires" and (self.training or not _MAIN_ONLY.get()):
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
