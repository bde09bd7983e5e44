"""The inference engine of a segmenter: the fastest numeric path this machine offers, chosen and checked.

On first use of a model on a machine, :func:`choose_engine` times every candidate path on a few batches of
the same preprocessed inputs and checks each against the model itself in fp32 eager (the reference) on a
reference batch. Every torch path runs the model's **inference copy** (:func:`imagery.models.inference.for_inference`:
BatchNorm folded into the convolutions, "same" padding inside them; the same function to float32 rounding,
1.14-1.32x the eager bf16 speed of the width-8 and the small RAU-Net 1 on this project's Xeon):

* ``torch-fp32``: torch eager, fp32, channels-last, the inference copy (checked against the model like the others);
* ``torch-bf16``: torch eager on the inference copy with its weights cast to bf16, channels-last, the input
  cast to bf16 (oneDNN's bf16 convolutions, AMX where the CPU has it); only where the CPU has native bf16
  (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``; emulated bf16 is slower than fp32). Casting the
  weights, not ``torch.autocast``, because autocast re-casts every weight and activation on every call:
  on the small RAU-Net 1 (Xeon with AMX, 2 threads, batch 4) autocast ran 2.9x fp32, the cast model 4.2x,
  with identical probabilities to 1e-4 (``benchmarks/RESULTS.md``);
* ``torch-compile``: ``torch.compile`` (inductor, needs a C++ compiler) of the fastest eager precision; tried
  only for a **long run**: when the caller says how many patches it will run (``workload``) and they would take
  at least :data:`COMPILE_WORTH_S` at the chosen path's measured rate (a whole tile, not a few patches), or
  when ``LANDSLIDE_ENGINE_COMPILE=1`` (always; ``=0``: never). Every process compiles again: on the idle
  2-core CPU 15-31 s with inductor's disk cache warm (131 s cold under load), for 1.34x the eager bf16 copy on
  the small RAU-Net 1 (19.5 vs 14.6 patches/s) and 1.07x on the width-8 one (``benchmarks/RESULTS.md``). The
  compiled network is checked and timed beside the eager choice (:func:`try_compile`) and kept only if it
  passes parity, is faster, and its first call (the compile) stayed under :data:`COMPILE_BUDGET_S`; without
  ``gcc``/``g++`` on the PATH it is recorded as rejected with that reason. Not cached (it is compiled again
  anyway); the network compiled while measuring is the one that runs;
* ``onnx-fp32`` and ``onnx-int8``: ONNX Runtime with the export of :mod:`imagery.inference.onnx` (int8:
  static QDQ quantization with per-channel int8 weights, calibrated on synthetic patches; sessions with
  all graph optimizations and one intra-op thread per core); the exported files are cached too. ONNX
  Runtime has no bf16 convolution kernels on the CPU, so there is no ``onnx-bf16``.

**Parity check** (against ``torch-fp32`` on the same :data:`REFERENCE_PATCHES` synthetic patches with their
landslide masks, preprocessed as the model's inputs). A path passes when

1. its landslide mask at the model's threshold agrees with fp32's at F1 >= :data:`MIN_F1_AGREEMENT`
   (0.98; fp32's mask taken as the truth; two empty masks agree): what an analyst sees is the mask;
2. its landslide-class F1 against the reference patches' true masks is within :data:`MAX_F1_DELTA` (0.02)
   of fp32's: the accuracy a user would measure does not move;
3. the mean landslide-probability difference is at most :data:`MEAN_PROB_DIFF` (0.01): the map's average;
4. the largest single-pixel difference is at most the path's precision's bound in :data:`MAX_PROB_DIFF_BY`:
   1e-3 for fp32 paths (ONNX Runtime fp32 meets 2e-5 on the small RAU-Net 1), 0.20 for
   bf16 and int8. The bf16 bound is what bf16 truly meets with margin, not a bound loosened until it
   passes: bf16 keeps 8 mantissa bits (0.4% per operation); the worst case is a network with random
   weights, whose logits sit near 0, i.e. every probability near 0.5 where the softmax is steepest, and
   there the small RAU-Net 1 moved single pixels by at most 0.15 (99.9th percentile 0.08, mean 0.005, mask
   F1 0.992); the width-8 model by 0.05. A broken path (classes swapped, NaN, a wrong operator) moves
   pixels by 0.3 to 1 and fails. Static int8 fails on random weights (max 0.3-0.7, F1 0.93-0.95) and is
   checked per model, so it runs only on a model where it holds.

**Choice**: the fastest path (best of ``rounds`` timed batches, candidates interleaved so that a loaded
machine penalises all alike; ONNX Runtime sessions give their memory arenas back after every measuring run, so
that side by side they do not hold a batch's activations each: the small RAU-Net 1's measurement peaked at
1.6 instead of 3.4 GB, and ONNX paths are timed up to 12 % slow, a bias towards torch where the two are close)
among those that pass. It is cached as JSON in :func:`cache_dir`
(``$LANDSLIDE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/landslide/engines``, else ``~/.cache/...``), keyed by
the model digest, the CPU's flags of note, the torch and ONNX Runtime versions and the thread count, so a
second use on the same machine measures nothing.

**Overrides**: ``runtime`` (``auto``, ``torch``, ``onnx``) and ``precision`` (``auto``, ``fp32``, ``bf16``,
``int8``) name a path directly and win over the cache (:func:`path_for`); ``LANDSLIDE_ENGINE_CANDIDATES``
(comma-separated path names) restricts what ``auto`` may choose among (the test suite pins ``torch-fp32``).

Every path runs behind :class:`EngineNetwork`, the network contract (``net(x) -> {name: logits}``) plus
its own counters, so that a command can state which path ran and the GFLOP/s it achieved
(:func:`engine_summary`; FLOPs per patch from ``torch.utils.flop_counter``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.atomic import atomic_write
from common.cli import UserError
from imagery.device import cpu_flags, cpu_has_bf16, cpu_model_name
from imagery.inference.config import PRECISIONS, RUNTIMES
from imagery.inference.lanes import LANE_PATHS, lane_count, planned_lanes, shared_lanes
from imagery.models.heads import main_output_only
from imagery.models.inference import for_inference

PATHS: tuple[str, ...] = ("torch-fp32", "torch-bf16", "torch-compile", "onnx-fp32", "onnx-int8")
REFERENCE = "torch-fp32"
MAX_PROB_DIFF_BY: dict[str, float] = {"fp32": 1e-3, "bf16": 0.20, "int8": 0.20}
MAX_PROB_DIFF = max(MAX_PROB_DIFF_BY.values())  # the loosest bound of any path
MEAN_PROB_DIFF = 0.01
MIN_F1_AGREEMENT = 0.98
MAX_F1_DELTA = 0.02
REFERENCE_PATCHES = 8
TIMING_BATCH = 8
COMPILE_BUDGET_S = 120.0
#: A run expected to take at least this long at the eager choice's rate (seconds) also tries ``torch.compile``:
#: its compile (15-31 s here, at most :data:`COMPILE_BUDGET_S`) is then at most 20 % of the run even where it
#: gains nothing, and its measured 1.34x on the small RAU-Net 1 saves about 2.5 min of a 10-minute run.
COMPILE_WORTH_S = 600.0
CACHE_ENV = "LANDSLIDE_ENGINE_CACHE"
CANDIDATES_ENV = "LANDSLIDE_ENGINE_CANDIDATES"
COMPILE_ENV = "LANDSLIDE_ENGINE_COMPILE"
CACHE_FORMAT = 4  # 3: torch paths timed on the main output only (ONNX computes all); 4: torch paths on the
# inference copy (imagery.models.inference); choices of older formats are measured again


# ----------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """Where engine choices (and exported ONNX files) are cached: ``$LANDSLIDE_ENGINE_CACHE``, else the
    user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/landslide/engines``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "landslide" / "engines"


def cache_key(digest: str) -> str:
    """The key of a model's choice on this machine: digest, CPU flags, library versions, thread count (and the
    candidate restrictions of the environment)."""
    try:
        import onnxruntime as ort  # noqa: PLC0415 - optional at this point

        ort_version = ort.__version__
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        ort_version = "none"
    parts = [digest, ",".join(cpu_flags()), f"torch {torch.__version__}", f"ort {ort_version}"]
    parts.append(f"threads {torch.get_num_threads()}")
    parts.append(f"{os.environ.get(CANDIDATES_ENV, '')}|{os.environ.get(COMPILE_ENV, '')}")  # what auto may pick
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------- the network wrapper
class EngineNetwork:
    """One numeric path with the network contract: ``net(x (B, C, H, W)) -> {name: float32 logits}``.

    Counts the patches it ran and the wall seconds the network was running (calls from several lanes at once,
    :mod:`imagery.inference.lanes`, count once), so that :meth:`stats` gives the throughput and GFLOP/s
    (``gflop_per_patch`` from the FLOP counter) achieved during a command.
    ``digest`` is the digest of the weights it runs (the torch model's, for every path). ``precision``
    (``fp32``, ``bf16``, ``int8``) names the arithmetic, for the parity bound; ``bf16`` runs the network in
    bf16: under ``torch.autocast`` with ``autocast=True``, else by casting the input to bf16 (``fn`` then
    holds a bf16 copy of the model). ``pad_batches``: a batch smaller than the largest one seen is padded with
    zeros to that size (and the output cut back), so that a compiled graph is not compiled again for the last,
    partial batch of a run.
    """

    def __init__(
        self,
        path: str,
        fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        *,
        digest: str,
        device: torch.device,
        bf16: bool = False,
        autocast: bool = False,
        channels_last: bool = False,
        gflop_per_patch: float = 0.0,
        precision: str | None = None,
        pad_batches: bool = False,
    ) -> None:
        self.path, self.fn, self.digest, self.device = path, fn, digest, device
        self.bf16, self.autocast, self.channels_last, self.gflop_per_patch = (
            bf16,
            autocast,
            channels_last,
            gflop_per_patch,
        )
        self.precision = precision or ("bf16" if bf16 else "fp32")
        self.patches, self.seconds = 0, 0.0
        self.pad_batches, self._batch = pad_batches, 0
        # calls may overlap (imagery.inference.lanes): ``seconds`` counts the wall time any call was running
        self._lock, self._running, self._since = threading.Lock(), 0, 0.0

    def eval(self) -> EngineNetwork:
        return self

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._lock:
            if self._running == 0:
                self._since = time.perf_counter()
            self._running += 1
        try:
            return self._run(x)
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self.seconds += time.perf_counter() - self._since

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = int(x.shape[0])
        if self.pad_batches and n < self._batch:
            x = torch.cat([x, x.new_zeros((self._batch - n, *x.shape[1:]))])
        self._batch = max(self._batch, n)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16 and not self.autocast:
            x = x.to(torch.bfloat16)
        autocast = self.bf16 and self.autocast
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = self.fn(x)
        out = {k: v[:n].float() for k, v in out.items()}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the time the network took, not the time to queue it
        with self._lock:
            self.patches += n
        return out

    def reset(self) -> EngineNetwork:
        """Zero the counters (a network measured by the engine then runs a command); returns itself."""
        self.patches, self.seconds = 0, 0.0
        return self

    def stats(self) -> dict[str, Any]:
        """``patches``, ``seconds`` in the network, ``patches_per_s`` and ``gflops`` (None before any run)."""
        rate = self.patches / self.seconds if self.seconds > 0 else None
        return {
            "patches": self.patches,
            "seconds": round(self.seconds, 3),
            "patches_per_s": rate,
            "gflops": rate * self.gflop_per_patch if rate and self.gflop_per_patch else None,
        }


def gflop_per_patch(model: nn.Module, example: torch.Tensor) -> float:
    """GFLOP of one forward pass on one preprocessed patch ``example`` ``(1, C, H, W)`` as the commands run
    it (the main output only: :func:`imagery.models.main_output_only`; ``torch.utils.flop_counter``; a
    multiply-add counts as 2 FLOPs). ONNX Runtime paths compute every output, so their GFLOP/s reads low."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    model = model.eval()
    with torch.inference_mode(), main_output_only(), FlopCounterMode(display=False) as counter:
        model(example[:1])
    return counter.get_total_flops() / 1e9


def segmenter_gflop(seg: Any) -> float:
    """GFLOP per patch of the torch segmenter ``seg`` on its own input channels and patch size."""
    return gflop_per_patch(seg.model, reference_inputs(seg, n=1))


# ----------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """A path that :func:`choose_engine` may time: ``build()`` returns its :class:`EngineNetwork`."""

    name: str
    build: Callable[[], EngineNetwork]


def compiler_missing() -> str | None:
    """Why ``torch.compile`` cannot run on this CPU (inductor builds C++ kernels), or None when it can."""
    import shutil  # noqa: PLC0415

    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None and shutil.which("c++") is None:
        return f"no C++ compiler ({cxx!r} not on the PATH): inductor builds C++ kernels on the CPU"
    return None


def _torch_net(seg: Any, path: str, gflop: float, *, bf16: bool, compiled: bool = False) -> EngineNetwork:
    # the inference copy (BatchNorm folded, padding inside the convolutions): the caller's model stays as it is
    model: nn.Module = for_inference(seg.model).to(memory_format=torch.channels_last)
    if bf16:
        model = model.to(torch.bfloat16).eval()
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]] = model
    if compiled:
        missing = compiler_missing() if seg.device.type == "cpu" else None
        if missing:
            raise RuntimeError(missing)
        fn = torch.compile(model)
    return EngineNetwork(
        path,
        fn,
        digest=seg.digest,
        device=seg.device,
        bf16=bf16,
        channels_last=True,
        gflop_per_patch=gflop,
        pad_batches=compiled,
    )


def _onnx_net(seg: Any, path: str, gflop: float, *, int8: bool) -> EngineNetwork:
    from imagery.inference import onnx as onnx_rt  # noqa: PLC0415 - onnxruntime loads only when asked for

    folder = cache_dir() / "onnx"
    file = folder / f"{seg.digest[:32]}-{'int8' if int8 else 'fp32'}.onnx"
    if not file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        onnx_rt.export_onnx(seg.model, seg.meta, file, int8=int8)
    net = onnx_rt.OnnxNetwork(file)
    precision = "int8" if int8 else "fp32"
    return EngineNetwork(
        path, net, digest=seg.digest, device=torch.device("cpu"), gflop_per_patch=gflop, precision=precision
    )


def build_path(seg: Any, path: str, gflop: float = 0.0) -> EngineNetwork:
    """The :class:`EngineNetwork` of ``path`` for the torch segmenter ``seg`` (its model an ``nn.Module``)."""
    if path == "torch-fp32":
        return _torch_net(seg, path, gflop, bf16=False)
    if path == "torch-bf16":
        return _torch_net(seg, path, gflop, bf16=True)
    if path == "torch-compile":
        return _torch_net(seg, path, gflop, bf16=seg.device.type == "cpu" and cpu_has_bf16(), compiled=True)
    if path in ("onnx-fp32", "onnx-int8"):
        if seg.device.type != "cpu":
            raise UserError(f"--runtime onnx runs on the CPU; got --device {seg.device}")
        return _onnx_net(seg, path, gflop, int8=path == "onnx-int8")
    raise UserError(f"unknown inference path {path!r}; expected one of {', '.join(PATHS)}")


def default_candidates(seg: Any, gflop: float) -> list[Candidate]:
    """The paths worth timing for ``seg`` on this machine (``$LANDSLIDE_ENGINE_CANDIDATES`` restricts them)."""
    names = ["torch-fp32"]
    if seg.device.type == "cpu":
        if cpu_has_bf16():
            names.append("torch-bf16")
        if os.environ.get(COMPILE_ENV) == "1":
            names.append("torch-compile")
        names += ["onnx-fp32", "onnx-int8"]
    wanted = allowed_paths()
    if wanted is not None:
        names = [n for n in names if n in wanted] or ["torch-fp32"]
    return [Candidate(n, lambda n=n: build_path(seg, n, gflop)) for n in names]


def allowed_paths() -> set[str] | None:
    """The paths ``$LANDSLIDE_ENGINE_CANDIDATES`` lets ``auto`` choose among (None: any). One-line errors."""
    allowed = os.environ.get(CANDIDATES_ENV)
    if not allowed:
        return None
    wanted = {n.strip() for n in allowed.split(",") if n.strip()}
    unknown = wanted - set(PATHS)
    if unknown:
        raise UserError(f"${CANDIDATES_ENV}: unknown path(s) {sorted(unknown)}; expected {', '.join(PATHS)}")
    return wanted


# ----------------------------------------------------------------------------- parity and timing
def landslide_prob(net: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: torch.Tensor) -> np.ndarray:
    """Landslide probability ``(B, H, W)`` of the main output for preprocessed ``x`` (the head's other
    outputs not computed: :func:`imagery.models.main_output_only`, as the commands run it)."""
    with torch.inference_mode(), main_output_only():
        out = net(x)
    return torch.softmax(out["out"].float(), dim=1)[:, 1].cpu().numpy()


def mask_f1(reference: np.ndarray, other: np.ndarray) -> float:
    """F1 of ``other``'s mask taking ``reference``'s as the truth (1.0 when both are empty)."""
    tp = int(np.logical_and(reference, other).sum())
    fp = int(np.logical_and(~reference, other).sum())
    fn = int(np.logical_and(reference, ~other).sum())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def parity(
    reference: np.ndarray,
    other: np.ndarray,
    threshold: float,
    *,
    precision: str = "fp32",
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """``max_prob_diff``, ``mean_prob_diff``, ``p999_prob_diff``, ``f1_agreement``, with ``labels`` (the true
    landslide masks ``(B, H, W)``) ``f1_labels``/``f1_labels_reference``, the bound applied (``max_allowed``,
    from ``precision``) and ``passed`` (the tolerances of the module docstring)."""
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    finite = bool(np.isfinite(other).all())
    ok = finite and diff.size > 0
    max_allowed = MAX_PROB_DIFF_BY.get(precision, MAX_PROB_DIFF)
    out: dict[str, Any] = {
        "max_prob_diff": float(diff.max()) if ok else float("inf"),
        "p999_prob_diff": float(np.quantile(diff, 0.999)) if ok else float("inf"),
        "mean_prob_diff": float(diff.mean()) if ok else float("inf"),
        "f1_agreement": mask_f1(reference > threshold, other > threshold) if finite else 0.0,
        "max_allowed": max_allowed,
    }
    passed = (
        out["max_prob_diff"] <= max_allowed
        and out["mean_prob_diff"] <= MEAN_PROB_DIFF
        and out["f1_agreement"] >= MIN_F1_AGREEMENT
    )
    if labels is not None:
        truth = labels.astype(bool)
        out["f1_labels_reference"] = mask_f1(truth, reference > threshold)
        out["f1_labels"] = mask_f1(truth, other > threshold) if finite else 0.0
        passed = passed and abs(out["f1_labels"] - out["f1_labels_reference"]) <= MAX_F1_DELTA
    out["passed"] = bool(passed)
    return out


def reference_batch(seg: Any, n: int = REFERENCE_PATCHES, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` synthetic patches (half with landslides) preprocessed as ``seg``'s inputs ``(n, C, H, W)`` and
    their true landslide masks ``(n, H, W)``; for a temporal model, landslide-free patches before and these after."""
    from imagery.data.bands import band_indices, is_temporal_band_set  # noqa: PLC0415
    from imagery.data.synthetic import synth_patch  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    size = int(seg.meta.patch_size)
    pairs = [synth_patch(rng, has_landslide=i % 2 == 0, size=size) for i in range(n)]
    raw = np.stack([p[0] for p in pairs])
    masks = np.stack([np.asarray(p[1]) > 0 for p in pairs])
    if is_temporal_band_set(seg.meta.bands):
        pre = np.stack([synth_patch(rng, has_landslide=False, size=size)[0] for _ in range(n)])
        return seg.preprocess(temporal_reference(seg.meta.bands, pre, raw, rng), seg.device), masks
    return seg.preprocess(raw[:, band_indices(seg.meta.bands)], seg.device), masks


def model_reference(seg: Any, ref_x: torch.Tensor) -> np.ndarray:
    """The landslide probabilities of ``ref_x`` by ``seg``'s model itself, fp32 eager, BatchNorms and padding as
    trained: what every path, the fp32 one on the inference copy (:func:`imagery.models.inference.for_inference`)
    included, is checked against."""
    return landslide_prob(seg.model.eval(), ref_x)


def reference_inputs(seg: Any, n: int = REFERENCE_PATCHES, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic patches (half with landslides) preprocessed as ``seg``'s inputs ``(n, C, H, W)``."""
    return reference_batch(seg, n, seed)[0]


def temporal_reference(names: Any, pre: np.ndarray, post: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Temporal channels (``B04@pre``, ``B04@diff``, ``NDVI@diff``, ``VV_dB@post``, ``slope``...) ``(N, C, H, W)``
    from synthetic L4S patches before and after ``(N, 14, H, W)``: S2 bands in reflectance, slope in degrees, radar
    as random dB (about -12 +- 3): realistic magnitudes for the parity check of a model trained on time series."""
    from imagery.data.bands import BANDS, canonical_band, model_unit_factor  # noqa: PLC0415

    def band(arr: np.ndarray, name: str) -> np.ndarray:
        return arr[:, BANDS.index(name)] / model_unit_factor(name)

    def ndvi(arr: np.ndarray) -> np.ndarray:
        red, nir = band(arr, "B4"), band(arr, "B8")
        return (nir - red) / np.maximum(nir + red, 1e-6)

    out = []
    for name in names:
        src, _, when = str(name).partition("@")
        if src == "slope" or name == "slope":
            out.append(band(pre, "slope"))
            continue
        try:
            b: str | None = canonical_band(src)
        except UserError:  # NDVI, VV_dB, VH_dB
            b = None
        if src == "NDVI":
            values = {"pre": ndvi(pre), "post": ndvi(post)}
        elif b in BANDS:
            values = {"pre": band(pre, b), "post": band(post, b)}
        else:  # radar (VV_dB, VH_dB) or a band L4S lacks (B8A: its neighbour B8's values)
            values = {"pre": rng.normal(-12.0, 3.0, pre[:, 0].shape), "post": rng.normal(-12.0, 3.0, pre[:, 0].shape)}
            if b == "B8A":
                values = {"pre": band(pre, "B8"), "post": band(post, "B8")}
        out.append(values["post"] - values["pre"] if when in ("diff", "logratio") else values.get(when, values["post"]))
    return np.stack(out, axis=1).astype(np.float32)


@dataclass
class EngineChoice:
    """Which path runs a model here, how it was decided (``measured``, ``cache``, ``forced``) and the
    measurements behind it (per candidate: ``patches_per_s``, ``gflops``, the parity numbers, ``passed``,
    ``reason`` when rejected)."""

    path: str
    source: str
    gflop_per_patch: float
    key: str = ""
    batch: int = 0
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    #: for a long run (:func:`try_compile`): ``patches``, ``expected_s`` at the eager choice, ``compile`` (its
    #: measurement) and ``kept``; empty otherwise
    long_run: dict[str, Any] = field(default_factory=dict)
    #: the network measured for this choice, run as it is (not cached, not part of :meth:`to_dict`)
    network: EngineNetwork | None = field(default=None, repr=False, compare=False)

    @property
    def measured_gflops(self) -> float | None:
        """GFLOP/s the chosen path reached while it was timed (None when nothing was timed)."""
        return self.candidates.get(self.path, {}).get("gflops")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "network"}


def measure_candidates(
    candidates: list[Candidate],
    x: torch.Tensor,
    ref_x: torch.Tensor,
    *,
    threshold: float,
    gflop: float,
    rounds: int = 2,
    time_rejected: bool = False,
    labels: np.ndarray | None = None,
    built: dict[str, EngineNetwork] | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Build, check (against ``reference``, the landslide probabilities of ``ref_x`` by the model itself in
    fp32, :func:`model_reference`; default: the first candidate's) and time each candidate on ``x`` (``rounds``
    interleaved timed batches after a warm-up; best time kept). A candidate that fails to build or run, or fails
    parity, is recorded with ``passed: False`` and a ``reason`` (and timed only with ``time_rejected``, for
    benchmarks). ``built`` (a dict) receives the networks that passed, by name, so that the chosen one runs
    without being built (or compiled) again."""
    results: dict[str, dict[str, Any]] = {}
    nets: dict[str, EngineNetwork] = {}
    for cand in candidates:
        t0 = time.perf_counter()
        try:
            net = cand.build()
            _shrink_arena(net, True)  # side by side, each ONNX Runtime session gives its arena back after a run
            prob = landslide_prob(net, ref_x)  # also the warm-up (and the compile, for torch-compile)
        except Exception as exc:  # noqa: BLE001 - any failure of a candidate rejects it, never the command
            results[cand.name] = {"passed": False, "reason": f"failed: {exc.__class__.__name__}: {str(exc)[:120]}"}
            continue
        first_s = time.perf_counter() - t0
        if reference is None:
            reference = prob
        precision = getattr(net, "precision", "fp32")
        res = {
            **parity(reference, prob, threshold, precision=precision, labels=labels),
            "first_call_s": round(first_s, 3),
        }
        if cand.name == "torch-compile" and first_s > COMPILE_BUDGET_S:
            res.update(passed=False, reason=f"compile took {first_s:.0f} s > {COMPILE_BUDGET_S:.0f} s")
        elif not res["passed"]:
            res["reason"] = "failed the parity check against the model in fp32"
        results[cand.name] = res
        if res["passed"] or time_rejected:
            nets[cand.name] = net
    best: dict[str, float] = {}
    for _ in range(max(1, rounds)):
        for name, net in nets.items():
            t0 = time.perf_counter()
            with main_output_only():  # timed as the commands run it (the 128-px map only)
                net(x)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    for name, secs in best.items():
        rate = int(x.shape[0]) / secs
        results[name].update(patches_per_s=round(rate, 3), gflops=round(rate * gflop, 2) if gflop else None)
    for net in nets.values():
        _shrink_arena(net, False)  # the path chosen runs at full speed
    if built is not None:
        built.update({n: net for n, net in nets.items() if results[n]["passed"]})
    return results


def _measure(
    seg: Any,
    cands: list[Candidate],
    n_ref: int,
    batch: int,
    gflop: float,
    rounds: int,
    built: dict[str, EngineNetwork],
    *,
    time_rejected: bool = False,
) -> tuple[dict[str, dict[str, Any]], torch.Tensor]:
    """:func:`measure_candidates` of ``cands`` for ``seg``: checked on ``n_ref`` reference patches against the model
    itself (:func:`model_reference`), timed on a batch of ``batch``; returns the results and the timing batch."""
    ref_x, labels = reference_batch(seg, n=n_ref)
    x = reference_inputs(seg, n=batch, seed=1) if batch != len(ref_x) else ref_x
    results = measure_candidates(
        cands,
        x,
        ref_x,
        threshold=seg.threshold,
        gflop=gflop,
        rounds=rounds,
        time_rejected=time_rejected,
        labels=labels,
        built=built,
        reference=model_reference(seg, ref_x),
    )
    return results, x


def _shrink_arena(net: EngineNetwork, on: bool) -> None:
    """Set ``shrink_arena`` of an ONNX Runtime network (:class:`imagery.inference.onnx.OnnxNetwork`)."""
    if hasattr(net.fn, "shrink_arena"):
        net.fn.shrink_arena = on  # type: ignore[attr-defined]


def _read_cache(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else {}


def cache_file() -> Path:
    return cache_dir() / "choices.json"


def choose_engine(
    seg: Any,
    *,
    batch: int | None = None,
    rounds: int = 2,
    candidates: list[Candidate] | None = None,
    use_cache: bool = True,
    reference: int | None = None,
    time_rejected: bool = False,
    workload: int | None = None,
    lanes: int = 1,
) -> EngineChoice:
    """The fastest path for the torch segmenter ``seg`` that passes the parity check (module docstring);
    from the cache when this model was measured on this machine before, else measured and cached.
    ``lanes``: the one-core lanes the caller runs an eager path in (:func:`try_compile`).

    ``workload``: the patches the caller will run; a long run also tries ``torch.compile`` (:func:`try_compile`).
    """
    key = cache_key(seg.digest)
    file = cache_file()
    if use_cache and candidates is None:
        hit = _read_cache(file).get("choices", {}).get(key)
        if hit and hit.get("path") in PATHS:
            choice = EngineChoice(**{k: v for k, v in hit.items() if k in EngineChoice.__dataclass_fields__})
            choice.source = "cache"
            return try_compile(seg, choice, workload, rounds=rounds, lanes=lanes)
    gflop = segmenter_gflop(seg)
    cands = candidates if candidates is not None else default_candidates(seg, gflop)
    if len(cands) == 1:  # nothing to choose among (e.g. $LANDSLIDE_ENGINE_CANDIDATES names one path)
        return EngineChoice(cands[0].name, "only candidate", gflop)
    batch = batch or TIMING_BATCH
    built: dict[str, EngineNetwork] = {}
    results, _ = _measure(
        seg, cands, reference or REFERENCE_PATCHES, batch, gflop, rounds, built, time_rejected=time_rejected
    )
    passing = {n: r for n, r in results.items() if r.get("passed") and r.get("patches_per_s")}
    path = max(passing, key=lambda n: passing[n]["patches_per_s"]) if passing else REFERENCE
    machine = {"cpu": cpu_model_name(), "flags": list(cpu_flags()), "threads": torch.get_num_threads()}
    machine["torch"] = torch.__version__
    choice = EngineChoice(path, "measured", gflop, key, batch, results, machine)
    if use_cache:
        data = _read_cache(file) or {"format": CACHE_FORMAT, "choices": {}}
        data["choices"][key] = {**choice.to_dict(), "digest": seg.digest, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(file) as fh:
                json.dump(data, fh, indent=2)
        except (OSError, UserError):
            pass  # a read-only cache folder costs a re-measurement next time, nothing else
    choice.network = built.pop(path, None)
    built.clear()  # the other candidates' networks (ONNX Runtime sessions hold their arenas) freed before any compile
    return try_compile(seg, choice, workload, rounds=rounds, lanes=lanes)


def compile_allowed() -> bool:
    """Whether ``auto`` may try ``torch.compile`` at all (not with ``LANDSLIDE_ENGINE_COMPILE=0``, nor where
    ``$LANDSLIDE_ENGINE_CANDIDATES`` leaves it out)."""
    wanted = allowed_paths()
    return os.environ.get(COMPILE_ENV) != "0" and (wanted is None or "torch-compile" in wanted)


def try_compile(
    seg: Any, choice: EngineChoice, workload: int | None, *, rounds: int = 2, lanes: int = 1
) -> EngineChoice:
    """``choice``, or ``torch-compile`` where the run is long and compiling pays (module docstring).

    A run is long when ``workload`` patches at the choice's measured rate would take at least
    :data:`COMPILE_WORTH_S`. Then the compiled network (of the fastest eager precision) is checked against
    fp32 and timed beside the choice on the same batches (:func:`measure_candidates`); it is kept where it
    passes, is faster and compiled within :data:`COMPILE_BUDGET_S`. ``choice.long_run`` records the decision.
    ``lanes``: the caller runs an eager choice in that many one-core lanes (:mod:`imagery.inference.lanes`; a
    compiled graph runs as one): the eager network is then also timed in lanes, and compile must beat that.
    """
    rate = choice.candidates.get(choice.path, {}).get("patches_per_s")
    if not workload or not rate or "torch-compile" in choice.candidates or seg.device.type != "cpu":
        return choice  # a short run, nothing timed, or compile already measured with the others
    expected = workload / float(rate)
    if expected < COMPILE_WORTH_S or not compile_allowed():
        return choice
    gflop = choice.gflop_per_patch
    names = [choice.path, "torch-compile"]  # checked against the model itself (model_reference), no fp32 pass
    measured = {choice.path: choice.network} if choice.network is not None else {}  # not built twice
    cands = [Candidate(n, lambda n=n: measured.get(n) or build_path(seg, n, gflop)) for n in names]
    batch = choice.batch or TIMING_BATCH
    built: dict[str, EngineNetwork] = {}
    results, x = _measure(seg, cands, REFERENCE_PATCHES, batch, gflop, rounds, built)
    compiled, eager = results["torch-compile"], results.get(choice.path, {})
    eager_rate = eager.get("patches_per_s", 0.0) or 0.0
    in_lanes = None
    if lanes > 1 and choice.path in LANE_PATHS and choice.path in built:
        in_lanes = lanes_rate(built[choice.path], x, lanes, rounds=rounds)
        eager_rate = max(eager_rate, in_lanes)
    kept = bool(compiled.get("passed")) and compiled.get("patches_per_s", 0.0) > eager_rate
    if not kept and compiled.get("passed"):
        where = f" in {lanes} lanes" if in_lanes else ""
        compiled = {**compiled, "reason": f"not faster than {choice.path}{where} on the same batches"}
    long_run = {
        "patches": int(workload),
        "expected_s": round(expected, 1),
        "compile": compiled,
        "kept": kept,
        "eager_patches_per_s": eager.get("patches_per_s"),
        "eager_lanes": lanes if in_lanes else 1,
        "eager_lanes_patches_per_s": round(in_lanes, 3) if in_lanes else None,
    }
    if not kept:
        choice.long_run = long_run
        choice.network = built.get(choice.path, choice.network)  # the eager network measured is the one that runs
        return choice
    candidates = {**choice.candidates, "torch-compile": compiled}
    out = EngineChoice("torch-compile", choice.source, gflop, choice.key, batch, candidates, choice.machine)
    out.long_run, out.network = long_run, built["torch-compile"]
    return out


def lanes_rate(net: EngineNetwork, x: torch.Tensor, lanes: int, *, rounds: int = 2) -> float:
    """Patches/s of ``net`` on ``x`` split over ``lanes`` one-core lanes (:func:`imagery.inference.lanes.shared_lanes`),
    the main output only; best of ``rounds`` after a warm-up. The network's counters are left as they were."""
    patches, seconds = net.patches, net.seconds
    best = float("inf")

    def run(part: torch.Tensor) -> None:
        with main_output_only():  # per thread: set in the lane itself
            net(part)

    pool = shared_lanes(lanes)  # the lanes Segmenter.predict will run it in
    parts = pool.split(x)
    pool.map(run, parts)  # warm-up: each lane's thread meets the network once
    for _ in range(max(1, rounds)):
        t0 = time.perf_counter()
        pool.map(run, parts)
        best = min(best, time.perf_counter() - t0)
    net.patches, net.seconds = patches, seconds
    return int(x.shape[0]) / best


# ----------------------------------------------------------------------------- overrides and wiring
def path_for(runtime: str, precision: str) -> str | None:
    """The path ``runtime``/``precision`` name, or None for ``auto``/``auto`` (measure). One-line errors."""
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if runtime == "auto" and precision == "auto":
        return None
    if runtime == "auto":
        runtime = "onnx" if precision == "int8" else "torch"
    if precision == "auto":
        precision = "fp32"
    path = f"{runtime}-{precision}"
    if path not in PATHS:
        choices = ", ".join(PATHS)
        raise UserError(f"--runtime {runtime} --precision {precision}: no such path; expected one of {choices}")
    return path


def engine_spec(runtime: str, precision: str = "auto") -> str:
    """One string for a command's ``--runtime``/``--precision`` (what the configs carry): ``auto``,
    ``torch``, ``onnx``, or ``RUNTIME:PRECISION`` (e.g. ``torch:bf16``); :func:`parse_spec` reads it."""
    path_for(runtime, precision)  # validates
    return runtime if precision == "auto" else f"{runtime}:{precision}"


def parse_spec(spec: str) -> tuple[str, str]:
    """``(runtime, precision)`` of an :func:`engine_spec` string."""
    runtime, _, precision = str(spec).partition(":")
    return runtime, precision or "auto"


def apply_engine(
    seg: Any,
    spec: str = "auto",
    *,
    batch: int | None = None,
    log: Callable[[str], None] | None = None,
    workload: int | None = None,
    lanes: int = 0,
) -> Any:
    """A segmenter like ``seg`` (a torch one) running on the path ``spec`` names, or on the automatic
    choice (:func:`choose_engine`) for ``auto``; ``seg.engine`` holds the :class:`EngineChoice`.
    ``workload``: the patches the caller will run (a long run also tries ``torch.compile``, against the eager
    path in the one-core lanes it will run in). ``lanes``: those lanes (:mod:`imagery.inference.lanes`; 0: one per
    torch thread, 1: none); the segmenter returned splits its batches over them (``Segmenter.lanes``).

    ``auto`` on a CUDA device runs torch fp32 (the choice is measured for CPUs). The choice is logged to
    the active MLflow run (tags ``engine.path``/``engine.source``, metric ``engine_choice_gflops``).
    """
    from imagery.inference.segmenter import Segmenter  # noqa: PLC0415 - segmenter imports nothing from here

    runtime, precision = parse_spec(spec)
    forced = path_for(runtime, precision)
    if forced is not None:
        gflop = segmenter_gflop(seg)
        choice = EngineChoice(forced, "forced", gflop)
    elif seg.device.type != "cpu":
        gflop = segmenter_gflop(seg)
        choice = EngineChoice(REFERENCE, "device", gflop)
    else:
        choice = choose_engine(seg, batch=batch or TIMING_BATCH, workload=workload, lanes=planned_lanes(lanes))
        if log is not None and (choice.source == "measured" or choice.long_run):
            log(f"inference engine: {describe_choice(choice)}")
    net = choice.network.reset() if choice.network is not None else build_path(seg, choice.path, choice.gflop_per_patch)
    out = Segmenter(net, seg.meta, seg.device)
    out.engine = choice  # type: ignore[attr-defined]
    out.lanes = lane_count(out, lanes)  # eager torch on the CPU: each batch split over one-core lanes
    _log_choice(choice)
    return out


def describe_choice(choice: EngineChoice) -> str:
    """One line: the path, how it was chosen, and each candidate's throughput or why it was rejected."""
    parts = []
    for name, r in choice.candidates.items():
        if r.get("passed") and r.get("patches_per_s"):
            parts.append(f"{name} {r['patches_per_s']:.2f} patches/s")
        else:
            parts.append(f"{name} rejected ({r.get('reason', 'not timed')})")
    extra = f": {'; '.join(parts)}" if parts else ""
    lr = choice.long_run
    if lr:
        why = "kept" if lr["kept"] else f"not kept ({lr['compile'].get('reason', '')})"
        extra += (
            f"; a long run ({lr['patches']} patches, ~{lr['expected_s'] / 60:.0f} min eager): torch.compile {why}, "
            f"{lr['compile'].get('patches_per_s') or 0:.2f} vs {lr.get('eager_patches_per_s') or 0:.2f} patches/s"
        )
    return f"{choice.path} ({choice.source}){extra}"


def _log_choice(choice: EngineChoice) -> None:
    import mlflow  # noqa: PLC0415

    if mlflow.active_run() is None:
        return
    mlflow.set_tags({"engine.path": choice.path, "engine.source": choice.source})
    if choice.long_run:
        mlflow.set_tag("engine.long_run_compile", "kept" if choice.long_run["kept"] else "not kept")
    if choice.measured_gflops:
        mlflow.log_metric("engine_choice_gflops", float(choice.measured_gflops))


def engine_summary(seg: Any) -> dict[str, Any]:
    """What a summary states about the path that ran: ``path``, ``source``, ``gflop_per_patch``, the
    throughput and GFLOP/s achieved in this command (``patches_per_s``, ``gflops``) and at the choice."""
    choice: EngineChoice | None = getattr(seg, "engine", None)
    net = getattr(seg, "model", None)
    stats = net.stats() if isinstance(net, EngineNetwork) else {}
    if choice is None:
        runtime = "onnx" if net.__class__.__name__ == "OnnxNetwork" else "torch"
        return {"path": f"{runtime}-fp32", "source": "plain", **stats}
    out = {
        "path": choice.path,
        "source": choice.source,
        "gflop_per_patch": round(choice.gflop_per_patch, 3),
        "choice_gflops": choice.measured_gflops,
        **stats,
    }
    if choice.long_run:
        out["long_run"] = choice.long_run
    return out


def log_engine_summary(seg: Any) -> dict[str, Any]:
    """:func:`engine_summary`, also logged to the active MLflow run (metrics ``engine_gflops``,
    ``engine_patches_per_s``)."""
    import mlflow  # noqa: PLC0415

    summary = engine_summary(seg)
    if mlflow.active_run() is not None:
        metrics = {"engine_gflops": summary.get("gflops"), "engine_patches_per_s": summary.get("patches_per_s")}
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v})
        mlflow.set_tag("engine.path", summary["path"])
    return summary


__all__ = [
    "CACHE_ENV",
    "CANDIDATES_ENV",
    "MAX_F1_DELTA",
    "MAX_PROB_DIFF",
    "MAX_PROB_DIFF_BY",
    "MEAN_PROB_DIFF",
    "MIN_F1_AGREEMENT",
    "PATHS",
    "PRECISIONS",
    "RUNTIMES",
    "Candidate",
    "EngineChoice",
    "EngineNetwork",
    "apply_engine",
    "build_path",
    "cache_dir",
    "cache_key",
    "choose_engine",
    "cpu_flags",
    "cpu_has_bf16",
    "engine_spec",
    "engine_summary",
    "gflop_per_patch",
    "log_engine_summary",
    "parity",
    "path_for",
]
