"""An inference copy of a trained network: the same function in fewer, cheaper operators.

:func:`for_inference` returns a copy of a model in eval mode with two rewrites that leave its outputs the same
(to float32 rounding: relative differences of about 1e-6 on every model of the registry, ``tests/imagery/
test_models_inference.py``) and its weights untouched (the original keeps its BatchNorm layers and can be trained
further):

1. **BatchNorm folded into the convolution before it** (``torch.nn.utils.fusion.fuse_conv_bn_eval``): in eval mode
   ``BN(conv(x)) = conv'(x)`` with ``w' = w * gamma / sqrt(var + eps)`` and
   ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``, for every ``Conv2d`` directly followed by a
   ``BatchNorm2d`` in a ``nn.Sequential`` (the blocks' ``conv -> BN -> activation``); the BN becomes an identity.
2. **"Same" padding inside the convolution**: :class:`imagery.models.blocks.SameConv2d` zero-pads its input
   with ``F.pad`` (a copy of every activation) before an unpadded convolution. With stride 1 its padding does not
   depend on the input size: ``k - 1`` in total (``(k - 1) * dilation``), the smaller half before. An odd kernel
   pads both sides alike, which the convolution does itself (``padding=(k - 1) // 2``); an even kernel pads one
   more after than before: the convolution pads both sides by the larger half and the first ``after - before``
   output rows and columns (computed from the extra padding before) are cut off (:class:`PaddedSameConv2d`).

Why: on this project's 2-core Xeon (AVX-512, AMX) the eager bf16 copy of the width-8 small RAU-Net 1 spent 13 %
of its time in ``F.pad`` and 10 % in BatchNorm; the inference copy runs it 1.14-1.28x faster (136.3 -> 174.4
patches/s, batch 8) and the small RAU-Net 1 1.28-1.32x (13.6 -> 17.4; ``benchmarks/inference_copy_bench.py``,
``benchmarks/RESULTS.md``). The inference engine (:mod:`imagery.inference.engine`) runs every torch path on this
copy and checks it against the model itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from imagery.models.blocks import SameConv2d


class PaddedSameConv2d(nn.Conv2d):
    """A stride-1 TensorFlow "same" convolution padding inside the convolution: ``(B, C, H, W) -> (B, C', H, W)``.

    Pads ``after`` (the larger half of ``(k - 1) * dilation``) on every side and drops the first
    ``after - before`` output rows/columns (``crop``): the same values as :class:`SameConv2d`'s
    ``F.pad(before, after)`` then an unpadded convolution, without copying the input."""

    def __init__(self, conv: SameConv2d) -> None:
        if conv.stride != (1, 1):
            raise ValueError(f"PaddedSameConv2d: stride must be 1, got {conv.stride}")
        total = [(k - 1) * d for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        after = tuple(t - t // 2 for t in total)
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=1,
            padding=after,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        self.crop = tuple(a - t // 2 for a, t in zip(after, total, strict=True))  # after - before: 0 or 1
        self.load_state_dict(conv.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        ch, cw = self.crop
        return y[..., ch:, cw:] if ch or cw else y


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``nn.Sequential`` into that
    convolution, in place (the BN becomes ``nn.Identity``); returns how many were folded."""
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[first], seq._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
                folded += 1
    return folded


def pad_inside_convs(model: nn.Module) -> int:
    """Replace every stride-1 :class:`SameConv2d` by a :class:`PaddedSameConv2d` in place; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, SameConv2d) and child.stride == (1, 1):
                parent._modules[name] = PaddedSameConv2d(child)
                replaced += 1
    return replaced


def for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its BatchNorms folded and its "same" padding inside the convolutions
    (module docstring); same outputs to float32 rounding. ``model`` itself is not changed."""
    out = copy.deepcopy(model).eval()
    fold_batch_norms(out)
    pad_inside_convs(out)
    return out.eval()
