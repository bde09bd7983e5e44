"""The model as trained vs its inference copy (``imagery.models.inference.for_inference``), side by side.

For each model (``--models``: the width-8 small RAU-Net 1, the small RAU-Net 1, RAU-Net 1; 23 channels,
multi-resolution head, 128 px, random weights with seed 0 and BatchNorm statistics away from the identity, as
after training) and each precision (fp32; bf16 where the CPU has it: a bf16 copy, channels-last, as the engine's
``torch-bf16`` path), the plain network and the inference copy run the same batch (``--batch`` patches), the two
interleaved, best of ``--rounds`` timed calls, the main output only (as the commands run it). Printed: patches/s of
each, the copy's ratio, and the largest landslide-probability difference between the copy and the plain network
of the same precision, and of each against the plain fp32 network.

    python benchmarks/inference_copy_bench.py [--models w8 small] [--batch 8] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from imagery.device import cpu_has_bf16, cpu_model_name  # noqa: E402
from imagery.models import create_model, main_output_only  # noqa: E402
from imagery.models.inference import for_inference  # noqa: E402

MODELS = {"w8": ("small_rau_net1", {"base_width": 8}), "small": ("small_rau_net1", {}), "rau1": ("rau_net1", {})}


def trained_like(name: str, kwargs: dict) -> nn.Module:
    """Model ``name`` with seed-0 weights and BatchNorm statistics and affine weights away from the identity."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=23, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            mod.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            mod.weight.data.copy_(0.75 + 0.5 * torch.rand(c, generator=gen))
    return model.eval()


def prob(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), main_output_only():
        return torch.softmax(net(x)["out"].float(), dim=1)[:, 1]


def timed(nets: dict[str, nn.Module], x: torch.Tensor, rounds: int) -> dict[str, float]:
    """Best seconds per call of each network on ``x``, the networks interleaved."""
    best = dict.fromkeys(nets, float("inf"))
    with torch.inference_mode(), main_output_only():
        for net in nets.values():
            net(x)  # warm-up
        for _ in range(rounds):
            for key, net in nets.items():
                t0 = time.perf_counter()
                net(x)
                best[key] = min(best[key], time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["w8", "small"], choices=sorted(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0, help="seed of the input batch")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model_name() or platform.processor()}, {os.cpu_count()} CPUs, torch threads {args.threads}")
    print(f"load at start: {os.getloadavg()}; batch {args.batch}, best of {args.rounds}")
    print(
        "| model | precision | plain patches/s | inference copy patches/s | ratio | max prob diff (same precision) "
        "| max prob diff vs plain fp32: copy / plain |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    for key in args.models:
        name, kwargs = MODELS[key]
        model = trained_like(name, kwargs)
        x = torch.randn(args.batch, 23, 128, 128, generator=torch.Generator().manual_seed(args.seed))
        x = x.contiguous(memory_format=torch.channels_last)
        reference = prob(model, x)
        for precision in precisions:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            plain = create_model(name, in_channels=23, **kwargs).eval()
            plain.load_state_dict(model.state_dict())
            plain = plain.to(memory_format=torch.channels_last).to(dtype).eval()
            fast = for_inference(model).to(memory_format=torch.channels_last).to(dtype).eval()
            xi = x.to(dtype)
            secs = timed({"plain": plain, "copy": fast}, xi, args.rounds)
            p_plain, p_fast = prob(plain, xi), prob(fast, xi)
            rate = {k: args.batch / v for k, v in secs.items()}
            print(
                f"| {key} ({name}) | {precision} | {rate['plain']:.1f} | {rate['copy']:.1f} | "
                f"{rate['copy'] / rate['plain']:.2f}x | {float((p_fast - p_plain).abs().max()):.2e} | "
                f"{float((p_fast - reference).abs().max()):.2e} / {float((p_plain - reference).abs().max()):.2e} |"
            )
    print(f"load at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
