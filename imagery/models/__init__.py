"""Model registry of the RAU-Net family and the comparison backbones.

``create_model(name, in_channels=23, num_classes=2, head="multires", attention=None,
use_bottleneck=None, **kwargs)`` builds a model by name; ``forward(x (B, C, H, W))`` returns a dict of
LOGITS: ``"out"`` ``(B, 2, H, W)`` for every head, ``"out_256"`` ``(B, 2, 2H, 2W)`` and ``"out_64"``
``(B, 2, H/2, W/2)`` for ``head="multires"``, ``"patch_logit"`` ``(B,)`` for ``head="dual"``.
:func:`patch_probability` turns any output dict into an image-level landslide probability ``(B,)``.

``attention=None`` / ``use_bottleneck=None`` mean "the model's own default as the authors built it"
(SE for the RAU-Nets, none for the baselines; bottleneck only in the residual U-Nets). Extra keyword
arguments: ``base_width`` (F; tiny widths for tests), ``dropout``, ``input_size`` (spatial size the
``triple_mha`` attention is built for, default 128); the backbones take ``width_mult`` and
``aspp_channels``. The built model carries ``model.model_config`` (a JSON-able dict of every argument
of ``create_model``) so that serving can rebuild it from the registry by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from imagery.models.attention import ATTENTIONS
from imagery.models.backbones import DeepLabV3
from imagery.models.heads import HEADS, SegHead, main_output_only, patch_probability
from imagery.models.rau_net import PRESETS, ResAttUNet, build_res_att_unet
from imagery.models.unet import UNet

__all__ = [
    "create_model",
    "list_models",
    "patch_probability",
    "main_output_only",
    "count_parameters",
    "ATTENTIONS",
    "HEADS",
    "ResAttUNet",
    "UNet",
    "SegHead",
]

DEFAULT_MODEL = "rau_net1"


def _res_att(preset: str) -> Callable[..., nn.Module]:
    def build(
        in_channels: int, num_classes: int, head: str, attention: str | None, use_bottleneck: bool | None, **kw: Any
    ) -> nn.Module:
        return build_res_att_unet(
            preset,
            in_channels=in_channels,
            num_classes=num_classes,
            head=head,
            attention=attention,
            use_bottleneck=use_bottleneck,
            **kw,
        )

    return build


def _unet(
    in_channels: int, num_classes: int, head: str, attention: str | None, use_bottleneck: bool | None, **kw: Any
) -> nn.Module:
    if use_bottleneck:
        raise ValueError("model 'unet': use_bottleneck is not an option of the traditional U-Net")
    return UNet(in_channels, num_classes, head, attention or "none", **kw)


def _backbone(kind: str) -> Callable[..., nn.Module]:
    def build(
        in_channels: int, num_classes: int, head: str, attention: str | None, use_bottleneck: bool | None, **kw: Any
    ) -> nn.Module:
        if use_bottleneck:
            raise ValueError(f"model 'deeplabv3_{kind}': use_bottleneck is not an option of DeepLabV3")
        if attention not in (None, "se"):
            raise ValueError(
                f"model 'deeplabv3_{kind}': attention={attention!r} is not an option "
                "(the encoder's own squeeze-excitation is fixed by the paper)"
            )
        return DeepLabV3(kind, in_channels, num_classes, head, **kw)

    return build


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **{name: _res_att(name) for name in PRESETS},
    "unet": _unet,
    "deeplabv3_mobilenetv3": _backbone("mobilenetv3"),
    "deeplabv3_efficientnet": _backbone("efficientnet"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (``"rau_net1"`` is the default)."""
    return list(_REGISTRY)


def create_model(
    name: str = DEFAULT_MODEL,
    in_channels: int = 23,
    num_classes: int = 2,
    head: str = "multires",
    attention: str | None = None,
    use_bottleneck: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` for ``(B, in_channels, H, W)`` inputs; see the module docstring.

    Raises ValueError naming the bad value for an unknown model, head, attention or option.
    """
    if name not in _REGISTRY:
        raise ValueError(f"model {name!r}: expected one of {', '.join(_REGISTRY)}")
    if head not in HEADS:
        raise ValueError(f"head={head!r}: expected one of {', '.join(HEADS)}")
    if attention is not None and attention not in ATTENTIONS:
        raise ValueError(f"attention={attention!r}: expected one of {', '.join(ATTENTIONS)}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r}: expected a positive integer")
    model = _REGISTRY[name](in_channels, num_classes, head, attention, use_bottleneck, **kwargs)
    model.model_config = {
        "name": name,
        "in_channels": in_channels,
        "num_classes": num_classes,  # type: ignore[assignment]
        "head": head,
        "attention": attention,
        "use_bottleneck": use_bottleneck,
        **kwargs,
    }
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (PyTorch ``parameters()``; excludes BN running statistics)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
