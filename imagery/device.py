"""Where imagery models run: device choice and numeric precision (shared by training and inference)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal, get_args

import torch

from common.cli import UserError

#: environment override of the ``"auto"`` training precision (``fp32`` or ``bf16``)
ENV_TRAIN_PRECISION = "LANDSLIDE_TRAIN_PRECISION"
_FLAGS_OF_NOTE = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")

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
    """bf16 autocast by default (``precision="auto"``) on CUDA and on a CPU with native bf16 (AVX512-BF16 or
    AMX-BF16: a training step 1.2-1.35x faster on this project's 2-core Xeon, ``benchmarks/RESULTS.md``);
    fp32 on other CPUs, where bf16 is emulated and slower. ``"fp32"``/``"bf16"`` force either; with
    ``"auto"``, the environment variable ``LANDSLIDE_TRAIN_PRECISION`` (``fp32``/``bf16``) decides instead."""
    if cfg_precision == "auto":  # an environment override of the default (the test suite pins fp32)
        cfg_precision = os.environ.get(ENV_TRAIN_PRECISION, "auto")
    if cfg_precision == "bf16":
        return True
    if cfg_precision != "auto":
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def cpu_flags() -> tuple[str, ...]:
    """The CPU flags of note for the numeric paths (from ``/proc/cpuinfo``; empty where it is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return tuple(f for f in _FLAGS_OF_NOTE if f in have)
    return ()


def cpu_has_bf16(flags: tuple[str, ...] | None = None) -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX-BF16); without it bf16 autocast is emulated and slow."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return torch.backends.cpu.get_cpu_capability() == "AMX"  # no /proc/cpuinfo: torch's own detection


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
