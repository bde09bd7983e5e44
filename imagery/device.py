"""Where imagery models run: device choice and numeric precision (shared by training and inference)."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from common.cli import UserError

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else CPU. Otherwise the named device (``ValueError`` if absent)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device: expected auto, cpu or cuda[:N], got {name!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return dev


def use_bf16(cfg_precision: str, device: torch.device) -> bool:
    """bf16 autocast on CUDA by default (``precision="auto"``); always fp32 on CPU unless forced."""
    if cfg_precision == "bf16":
        return True
    return cfg_precision == "auto" and device.type == "cuda"
