"""Speed benchmark of RAU-Net training and inference: the project's fast path vs a plain loop.

Run side by side in the same process, on the same synthetic L4S patches (written as HDF5 files):

* **plain loop** (what a straightforward port does): per sample, read ``image_N.h5``, clean it and
  compute the engineered channels in NumPy/OpenCV, stack the batch, eager fp32 NCHW forward
  (and backward for training) under ``torch.no_grad`` for inference.
* **fast path** (``imagery.training.trainer.Trainer`` / ``imagery.inference.serving.Segmenter``): patches resident in
  memory (on the GPU when present); the engineered channels computed batched in torch on the device
  (for training once per run, as the trainer does, for inference per batch, as ``Segmenter.predict``
  does); augmentation on the device; channels-last tensors; ``torch.inference_mode``; on CUDA bf16
  autocast and optionally ``torch.compile``.

Prints images/s, the fast/plain ratio and peak memory (CUDA: ``max_memory_allocated``; CPU: the
process's peak resident set size, which only grows, so it is an upper bound across the whole run).

Usage::

    python benchmarks/imagery_bench.py                                   # both models, batch 12
    python benchmarks/imagery_bench.py --models small_rau_net1 --batch-sizes 12 32 --iters 3
    python benchmarks/imagery_bench.py --epoch 3799                      # time a full epoch (GPU)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imagery.data import load_patches, read_image  # noqa: E402
from imagery.data.synthetic import write_synthetic_l4s  # noqa: E402
from imagery.device import resolve_device  # noqa: E402
from imagery.models import create_model  # noqa: E402
from imagery.training.losses import build_criterion  # noqa: E402
from imagery.transforms import Preprocessor  # noqa: E402
from imagery.transforms.augment import augment_batch  # noqa: E402
from imagery.transforms.features import compute_features  # noqa: E402
from imagery.transforms.normalize import clean_image  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def plain_batch(
    paths: list[str], masks: np.ndarray, idx: np.ndarray, channel_set: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loading and NumPy feature engineering, stacked to an NCHW fp32 batch (CPU)."""
    xs = []
    for i in idx:
        img, _ = clean_image(read_image(paths[i]))
        xs.append(compute_features(img, channel_set))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(masks[idx].astype(np.int64))


def bench_model(
    name: str,
    batch: int,
    iters: int,
    warmup: int,
    root: Path,
    channel_set: int,
    device: torch.device,
    compile_model: bool,
) -> dict[str, float | str | int]:
    ps = load_patches(root, "train", layout="plain", require_masks=True)
    n = len(ps)
    rng = np.random.default_rng(0)
    batches = [rng.choice(n, batch, replace=False) for _ in range(warmup + iters)]
    crit = build_criterion("focal_iou", "multires")
    out: dict[str, float | str | int] = {"model": name, "batch": batch, "channels": channel_set, "device": str(device)}
    cuda = device.type == "cuda"

    # ---------------- plain: eager fp32 NCHW, per-sample loading + NumPy features
    torch.manual_seed(0)
    model = create_model(name, in_channels=channel_set).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    _reset_peak(device)
    model.train()
    for k, idx in enumerate(batches):
        if k == warmup:
            _sync(device)
            t0 = time.perf_counter()
        xb, yb = plain_batch(ps.paths, ps.masks, idx, channel_set)
        loss = crit(model(xb.to(device)), yb.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    out["plain_train_img_s"] = iters * batch / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        for k, idx in enumerate(batches):
            if k == warmup:
                _sync(device)
                t0 = time.perf_counter()
            xb, _ = plain_batch(ps.paths, ps.masks, idx, channel_set)
            torch.softmax(model(xb.to(device))["out"], 1)[:, 1].cpu()
    _sync(device)
    out["plain_infer_img_s"] = iters * batch / (time.perf_counter() - t0)
    out["plain_peak_mb"] = _peak_mb(device)
    del model, opt

    # ---------------- fast: resident data, batched device features, channels-last, bf16 on CUDA
    torch.manual_seed(0)
    model = create_model(name, in_channels=channel_set).to(device).to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    pre = Preprocessor(channel_set)
    _reset_peak(device)
    t0 = time.perf_counter()
    x_all = pre.transform_all(np.asarray(ps.images), device)  # once per run, as the trainer does
    y_all = torch.as_tensor(ps.masks, device=device)
    _sync(device)
    out["fast_features_once_s"] = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)  # augment_batch draws on the CPU
    model.train()
    for k, idx in enumerate(batches):
        if k == warmup:
            _sync(device)
            t0 = time.perf_counter()
        it = torch.as_tensor(idx, device=device)
        xb, yb = augment_batch(x_all.index_select(0, it), y_all.index_select(0, it), gen, rot90=True, flip=False)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            o = fwd(xb)
        loss = crit({k2: v.float() for k2, v in o.items()}, yb.long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    out["fast_train_img_s"] = iters * batch / (time.perf_counter() - t0)
    raw = torch.as_tensor(np.asarray(ps.images))
    model.eval()
    with torch.inference_mode():
        for k, idx in enumerate(batches):
            if k == warmup:
                _sync(device)
                t0 = time.perf_counter()
            xb = pre(raw[torch.as_tensor(idx)], device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                o = fwd(xb)["out"]
            torch.softmax(o.float(), 1)[:, 1].cpu()
    _sync(device)
    out["fast_infer_img_s"] = iters * batch / (time.perf_counter() - t0)
    out["fast_peak_mb"] = _peak_mb(device)
    out["train_ratio"] = float(out["fast_train_img_s"]) / float(out["plain_train_img_s"])
    out["infer_ratio"] = float(out["fast_infer_img_s"]) / float(out["plain_infer_img_s"])
    return out


def epoch_time(name: str, n: int, batch: int, device: torch.device, channel_set: int, compile_model: bool) -> float:
    """Seconds for one training epoch over ``n`` resident 128-px patches (fast path, random data)."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=channel_set).to(device).to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    crit = build_criterion("focal_iou", "multires")
    x = torch.rand(n, channel_set, 128, 128, device=device)
    y = (torch.rand(n, 128, 128, device=device) > 0.98).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)  # augment_batch draws on the CPU
    cuda = device.type == "cuda"
    model.train()
    for warm in (True, False):
        _sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(n, device=device)
        steps = range(0, min(n, 3 * batch) if warm else n, batch)
        for s in steps:
            it = order[s : s + batch]
            xb, yb = augment_batch(x.index_select(0, it), y.index_select(0, it), gen, rot90=True, flip=False)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                o = fwd(xb.contiguous(memory_format=torch.channels_last))
            loss = crit({k: v.float() for k, v in o.items()}, yb.long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
    return time.perf_counter() - t0


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small_rau_net1", "rau_net1"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[12])
    p.add_argument("--iters", type=int, default=2, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    p.add_argument("--n-patches", type=int, default=48, help="synthetic patches written to disk")
    p.add_argument("--channels", type=int, default=23)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--epoch", type=int, default=0, help="also time a full fast-path epoch of this many patches")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    print(f"machine: {machine(device)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_l4s(Path(tmp) / "l4s", n_patches=args.n_patches, seed=0, dtype=np.float64)
        for name in args.models:
            for b in args.batch_sizes:
                r = bench_model(name, b, args.iters, args.warmup, root, args.channels, device, args.compile)
                rows.append(r)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    if args.epoch:
        for name in args.models:
            s = epoch_time(name, args.epoch, args.batch_sizes[0], device, args.channels, args.compile)
            rows.append({"model": name, "epoch_patches": args.epoch, "epoch_s": s})
            print(f"{name}: one epoch of {args.epoch} patches in {s:.1f} s", flush=True)
    print(
        "| model | batch | plain train img/s | fast train img/s | ratio | plain infer img/s | fast infer img/s | ratio | peak MB plain/fast |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "batch" in r:
            print(
                f"| {r['model']} | {r['batch']} | {r['plain_train_img_s']:.2f} | {r['fast_train_img_s']:.2f} | "
                f"{r['train_ratio']:.2f}x | {r['plain_infer_img_s']:.2f} | {r['fast_infer_img_s']:.2f} | "
                f"{r['infer_ratio']:.2f}x | {r['plain_peak_mb']:.0f} / {r['fast_peak_mb']:.0f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
