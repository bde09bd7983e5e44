"""The inference engine choice (imagery.inference.engine): the fastest path that passes the fp32 parity check,
cached by model digest, overridden by --runtime/--precision; a path that fails parity is never chosen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.cli import UserError
from imagery import device
from imagery.inference import Segmenter, SegmenterMeta, engine, load_segmenter, save_segmenter_files
from imagery.inference.engine import Candidate, EngineNetwork
from imagery.models import create_model

BUILD_PATH = engine.build_path
KW = {"in_channels": 23, "num_classes": 2, "head": "multires", "base_width": 8}
META = SegmenterMeta("small_rau_net1", KW, 23, threshold=0.5, head="multires")


def _segmenter(seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    return Segmenter(create_model("small_rau_net1", **KW), META, "cpu")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh engine cache; auto may choose among torch fp32 and bf16 (no ONNX export: seconds per model)."""
    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "engines"))
    monkeypatch.setenv(engine.CANDIDATES_ENV, "torch-fp32,torch-bf16")
    monkeypatch.setattr(engine, "REFERENCE_PATCHES", 2)  # tiny batches: the suite's tests stay quick
    monkeypatch.setattr(engine, "TIMING_BATCH", 2)
    return tmp_path / "engines"


def _fake(seg: Segmenter, name: str, transform) -> Candidate:
    """A candidate running the same network with its landslide logits changed by ``transform``."""

    def build() -> EngineNetwork:
        base = engine.build_path(seg, "torch-fp32")

        def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = dict(seg.model(x))
            out["out"] = transform(out["out"])
            return out

        return EngineNetwork(name, fn, digest=base.digest, device=base.device)

    return Candidate(name, build)


def test_a_path_failing_parity_is_rejected_and_the_choice_passes(cache: Path) -> None:
    seg = _segmenter()
    cands = engine.default_candidates(seg, 1.0)
    cands.append(_fake(seg, "fake-swapped", lambda o: o.flip(1)))  # classes swapped: p -> 1 - p
    cands.append(_fake(seg, "fake-nan", lambda o: o * float("nan")))
    choice = engine.choose_engine(seg, batch=2, rounds=1, candidates=cands)
    res = choice.candidates
    # the fp32 path runs the inference copy (BatchNorm folded), checked against the model itself
    assert res["torch-fp32"]["passed"] and res["torch-fp32"]["max_prob_diff"] < 1e-4
    for fake in ("fake-swapped", "fake-nan"):
        assert not res[fake]["passed"] and "parity" in res[fake]["reason"] and "patches_per_s" not in res[fake]
    assert choice.path in ("torch-fp32", "torch-bf16") and res[choice.path]["passed"]
    assert res[choice.path]["patches_per_s"] == max(r.get("patches_per_s", 0) for r in res.values())
    assert choice.gflop_per_patch > 1.0 and choice.measured_gflops > 0  # width-8: about 2.5 GFLOP per patch


def test_parity_tolerances() -> None:
    ref = np.full((2, 4, 4), 0.2, np.float32)
    ref[:, :2] = 0.9
    assert engine.parity(ref, ref + 0.005, 0.5, precision="bf16")["passed"]
    assert not engine.parity(ref, ref + 0.005, 0.5, precision="fp32")["passed"]  # fp32 paths: within 1e-3
    assert engine.parity(ref, ref + 5e-4, 0.5, precision="fp32")["passed"]
    assert not engine.parity(ref, ref + 0.02, 0.5, precision="bf16")["passed"]  # mean difference above 0.01
    one_flip = ref.copy()
    one_flip[0, 3, 3] = 0.6  # one pixel moves by 0.4 (and flips)
    assert not engine.parity(ref, one_flip, 0.5, precision="bf16")["passed"]
    big = np.full((1, 100, 100), 0.9, np.float32)
    moved = big.copy()
    moved[0, 0, 0] = 0.65  # one pixel of 10,000 by 0.25, still a landslide: only the largest difference sees it
    res = engine.parity(big, moved, 0.5, precision="bf16")
    assert not res["passed"] and res["f1_agreement"] == 1 and res["max_allowed"] == 0.20
    moved[0, 0, 0] = 0.75  # by 0.15: what bf16 meets on the small RAU-Net 1
    assert engine.parity(big, moved, 0.5, precision="bf16")["passed"]
    assert engine.mask_f1(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_parity_checks_the_landslide_f1_against_the_true_masks() -> None:
    labels = np.zeros((1, 100, 100), bool)
    labels[0, 0, :40] = True  # 40 true landslide pixels
    ref = np.full((1, 100, 100), 0.2, np.float32)
    ref[0, :20] = 0.8  # fp32's mask: 2,000 pixels including the 40 true ones at 0.55 (near the threshold)
    ref[0, 0, :40] = 0.55
    other = ref.copy()
    other[0, 0, :40] = 0.45  # the 40 true pixels drop out: mask F1 agreement 0.990, but label F1 0.039 -> 0
    res = engine.parity(ref, other, 0.5, precision="bf16")
    assert res["passed"] and res["f1_agreement"] >= engine.MIN_F1_AGREEMENT  # without labels: passes
    res = engine.parity(ref, other, 0.5, precision="bf16", labels=labels)
    assert not res["passed"] and res["f1_labels"] == 0.0 and res["f1_labels_reference"] > engine.MAX_F1_DELTA
    near = ref.copy()
    near[0, 0, :4] = 0.45  # 4 of them: label F1 moves by 0.004
    res = engine.parity(ref, near, 0.5, precision="bf16", labels=labels)
    assert res["passed"] and abs(res["f1_labels"] - res["f1_labels_reference"]) <= engine.MAX_F1_DELTA


def test_bf16_path_runs_a_bf16_copy_and_leaves_the_model_fp32() -> None:
    seg = _segmenter()
    net = engine.build_path(seg, "torch-bf16")
    assert net.bf16 and not net.autocast and net.precision == "bf16"
    assert next(net.fn.parameters()).dtype == torch.bfloat16 and next(seg.model.parameters()).dtype == torch.float32
    for path_net in (net, engine.build_path(seg, "torch-fp32")):  # both run the inference copy: no BatchNorm
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in path_net.fn.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in seg.model.modules())  # the model keeps its own
    x, labels = engine.reference_batch(seg, n=2)
    assert labels.shape == (2, 128, 128) and labels.any()
    ref = engine.model_reference(seg, x)
    res = engine.parity(ref, engine.landslide_prob(net, x), seg.threshold, precision="bf16", labels=labels)
    assert res["passed"] and 0 < res["max_prob_diff"] <= 0.2, res


def test_compile_without_a_compiler_is_rejected_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in engine.compiler_missing()
    seg = _segmenter()
    cands = [c for c in engine.default_candidates(seg, 1.0) if c.name == "torch-fp32"]
    cands.append(Candidate("torch-compile", lambda: engine.build_path(seg, "torch-compile")))
    res = engine.measure_candidates(cands, *[engine.reference_inputs(seg, n=1)] * 2, threshold=0.5, gflop=1.0, rounds=1)
    assert not res["torch-compile"]["passed"] and "C++ compiler" in res["torch-compile"]["reason"]


def test_the_choice_is_cached_by_model_digest(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = _segmenter()
    first = engine.choose_engine(seg, batch=2, rounds=1)
    assert first.source == "measured" and first.candidates[first.path]["passed"]
    stored = json.loads((cache / "choices.json").read_text())["choices"]
    assert list(stored) == [engine.cache_key(seg.digest)] and stored[first.key]["digest"] == seg.digest

    def no_measuring(*a: object, **k: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(engine, "measure_candidates", no_measuring)
    again = engine.choose_engine(_segmenter())  # the same weights: the same digest
    assert again.source == "cache" and again.path == first.path
    with pytest.raises(AssertionError, match="measured again"):
        engine.choose_engine(_segmenter(seed=1))  # other weights: not in the cache
    data = json.loads((cache / "choices.json").read_text())
    data["format"] = engine.CACHE_FORMAT - 1  # a choice timed by an older engine (e.g. with every head output)
    (cache / "choices.json").write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="measured again"):
        engine.choose_engine(_segmenter())


def test_overrides_win_over_the_cache(cache: Path) -> None:
    seg = _segmenter()
    choice = engine.choose_engine(seg, batch=2, rounds=1)
    other = "torch-fp32" if choice.path != "torch-fp32" else "torch-bf16"
    runtime, precision = other.split("-")
    forced = engine.apply_engine(seg, engine.engine_spec(runtime, precision))
    assert forced.engine.path == other and forced.engine.source == "forced"
    assert forced.model.path == other and forced.model.bf16 == (other == "torch-bf16")
    assert next(seg.model.parameters()).dtype == torch.float32  # the bf16 path casts a copy
    out = forced.predict(np.zeros((2, 14, 128, 128), np.float32))
    assert out["prob"].shape == (2, 128, 128) and np.isfinite(out["prob"]).all()
    summary = engine.engine_summary(forced)
    assert summary["path"] == other and summary["patches"] == 2 and summary["gflops"] > 0
    auto = engine.apply_engine(seg, "auto")
    assert auto.engine.source == "cache" and auto.engine.path == choice.path


def test_runtime_and_precision_flags() -> None:
    assert engine.path_for("auto", "auto") is None
    assert engine.path_for("torch", "auto") == "torch-fp32"
    assert engine.path_for("auto", "bf16") == "torch-bf16"
    assert engine.path_for("auto", "int8") == "onnx-int8"
    assert engine.path_for("onnx", "auto") == "onnx-fp32"
    assert engine.parse_spec(engine.engine_spec("torch", "bf16")) == ("torch", "bf16")
    for runtime, precision in (("torch", "int8"), ("onnx", "bf16"), ("tpu", "auto"), ("auto", "fp8")):
        with pytest.raises(UserError):
            engine.path_for(runtime, precision)


def test_load_segmenter_uses_the_choice(cache: Path, tmp_path: Path) -> None:
    seg = _segmenter()
    save_segmenter_files(seg.model, META, tmp_path / "segmenter")
    auto = load_segmenter(str(tmp_path / "segmenter"), "cpu", runtime="auto")
    assert auto.engine.source == "measured" and auto.digest == seg.digest
    again = load_segmenter(str(tmp_path / "segmenter"), "cpu", runtime="auto")
    assert again.engine.source == "cache" and again.engine.path == auto.engine.path
    plain = load_segmenter(str(tmp_path / "segmenter"), "cpu")  # library default: torch eager fp32, no wrapper
    assert isinstance(plain.model, torch.nn.Module) and engine.engine_summary(plain)["path"] == "torch-fp32"
    x = np.random.default_rng(0).normal(1.0, 0.3, size=(2, 14, 128, 128)).astype(np.float32)
    ref, got = plain.predict(x)["prob"], again.predict(x)["prob"]
    assert np.abs(ref - got).max() <= engine.MAX_PROB_DIFF
    with pytest.raises(UserError, match="--precision"):
        load_segmenter(str(tmp_path / "segmenter"), "cpu", runtime="torch:fp8")


def test_bf16_is_a_candidate_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine.CANDIDATES_ENV, raising=False)
    seg = _segmenter()
    monkeypatch.setattr(device, "cpu_flags", lambda: ("avx2", "avx512f"))
    assert [c.name for c in engine.default_candidates(seg, 1.0)] == ["torch-fp32", "onnx-fp32", "onnx-int8"]
    monkeypatch.setattr(device, "cpu_flags", lambda: ("avx512f", "avx512_bf16"))
    assert "torch-bf16" in [c.name for c in engine.default_candidates(seg, 1.0)]


def test_cpu_training_uses_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv(device.ENV_TRAIN_PRECISION, raising=False)  # the suite pins fp32; this test checks "auto"
    monkeypatch.setattr(device, "cpu_flags", lambda: ("avx2", "avx512f"))
    assert not device.use_bf16("auto", cpu) and device.use_bf16("bf16", cpu)
    monkeypatch.setattr(device, "cpu_flags", lambda: ("avx512f", "amx_bf16"))
    assert device.use_bf16("auto", cpu) and not device.use_bf16("fp32", cpu)
    monkeypatch.setenv(device.ENV_TRAIN_PRECISION, "fp32")
    assert not device.use_bf16("auto", cpu) and device.use_bf16("bf16", cpu)


def _slow(net: EngineNetwork, seconds: float) -> EngineNetwork:
    """``net`` with ``seconds`` added to every call (an eager path the fake compiled one beats)."""
    fn = net.fn

    def slower(x: torch.Tensor) -> dict[str, torch.Tensor]:
        import time

        time.sleep(seconds)
        return fn(x)

    net.fn = slower
    return net


@pytest.fixture
def fake_compile(cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``torch-compile`` built as the fp32 network (no inductor: seconds, not minutes), the eager paths made
    slower than it; counts the builds of each path. ``auto`` may choose among fp32, bf16 and compile."""
    monkeypatch.setenv(engine.CANDIDATES_ENV, "torch-fp32,torch-bf16,torch-compile")
    monkeypatch.delenv(engine.COMPILE_ENV, raising=False)
    real = engine.build_path
    builds: dict[str, int] = {}

    def build(seg: Segmenter, path: str, gflop: float = 0.0) -> EngineNetwork:
        builds[path] = builds.get(path, 0) + 1
        if path == "torch-compile":
            net = real(seg, "torch-fp32", gflop)
            return EngineNetwork(path, net.fn, digest=net.digest, device=net.device, pad_batches=True)
        return _slow(real(seg, path, gflop), 1.0)  # slower than a loaded fp32 network (0.3 s was not)

    monkeypatch.setattr(engine, "build_path", build)
    return builds


def test_a_long_run_tries_compile_and_runs_the_network_it_measured(fake_compile: dict[str, int]) -> None:
    seg = _segmenter()
    auto = engine.apply_engine(seg, "auto", workload=10**7)  # 10 million patches: days at any rate
    lr = auto.engine.long_run
    assert auto.engine.path == "torch-compile" and lr["kept"] and lr["patches"] == 10**7
    assert lr["expected_s"] >= engine.COMPILE_WORTH_S and lr["compile"]["passed"]
    assert fake_compile["torch-compile"] == 1  # the network measured is the one that runs (no second compile)
    assert auto.model.path == "torch-compile" and auto.model.patches == 0  # the measurement is not counted
    out = auto.predict(np.zeros((3, 14, 128, 128), np.float32))  # a partial batch: padded, cut back
    assert out["prob"].shape == (3, 128, 128) and auto.model.patches == 3
    assert engine.engine_summary(auto)["long_run"]["kept"]
    assert "torch.compile kept" in engine.describe_choice(auto.engine)
    stored = json.loads((engine.cache_file()).read_text())["choices"]
    assert [c["path"] for c in stored.values()] != ["torch-compile"]  # the eager choice is cached, not compile


def test_a_short_run_never_compiles(fake_compile: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    seg = _segmenter()
    short = engine.apply_engine(seg, "auto", workload=4)
    assert short.engine.path != "torch-compile" and not short.engine.long_run and "torch-compile" not in fake_compile
    monkeypatch.setenv(engine.COMPILE_ENV, "0")  # never, however long
    never = engine.apply_engine(seg, "auto", workload=10**7)
    assert never.engine.path != "torch-compile" and "torch-compile" not in fake_compile


def test_a_compile_that_fails_leaves_the_eager_choice(fake_compile: dict[str, int], monkeypatch) -> None:
    import shutil

    seg = _segmenter()
    choice = engine.choose_engine(seg, batch=2, rounds=1)
    monkeypatch.setattr(engine, "build_path", BUILD_PATH)  # the real paths, compile included
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no C++ compiler
    long = engine.try_compile(seg, choice, 10**7, rounds=1)
    assert long.path == choice.path and long.long_run and not long.long_run["kept"]
    assert "C++ compiler" in long.long_run["compile"]["reason"]


def test_padded_batches_give_the_unpadded_result() -> None:
    seg = _segmenter()
    net = engine.build_path(seg, "torch-fp32")
    seen: list[int] = []
    fn = net.fn

    def record(x: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(int(x.shape[0]))
        return fn(x)

    padded = EngineNetwork("p", record, digest=net.digest, device=net.device, pad_batches=True)
    x = engine.reference_inputs(seg, n=3)
    ref = engine.landslide_prob(net, x[:2])
    padded(x)  # the largest batch so far: 3
    got = engine.landslide_prob(padded, x[:2])
    assert seen == [3, 3] and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_a_long_run_in_lanes_keeps_compile_only_where_it_beats_the_eager_lanes(cache: Path, monkeypatch) -> None:
    """Eager at 0.3 s per patch (one stream of 2: 3.3 patches/s; two lanes of 1: 6.7), compiled at 0.2 s per
    patch (5.0): compile beats one eager stream but not two lanes, and the decision follows the caller's lanes."""
    import time

    monkeypatch.setenv(engine.CANDIDATES_ENV, "torch-fp32,torch-bf16,torch-compile")
    monkeypatch.delenv(engine.COMPILE_ENV, raising=False)
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)  # two eager candidates (both built as fp32 here)
    real = engine.build_path

    def per_patch(net: EngineNetwork, seconds: float) -> EngineNetwork:
        fn = net.fn

        def slow(x: torch.Tensor) -> dict[str, torch.Tensor]:
            time.sleep(seconds * x.shape[0])
            return fn(x)

        net.fn = slow
        return net

    def build(seg: Segmenter, path: str, gflop: float = 0.0) -> EngineNetwork:
        net = real(seg, "torch-fp32", gflop)
        if path == "torch-compile":
            return per_patch(EngineNetwork(path, net.fn, digest=net.digest, device=net.device), 0.2)
        return per_patch(net, 0.3)

    monkeypatch.setattr(engine, "build_path", build)
    seg = _segmenter()
    one = engine.apply_engine(seg, "auto", workload=10**7, lanes=1)
    assert one.engine.path == "torch-compile" and one.engine.long_run["eager_lanes"] == 1
    two = engine.apply_engine(seg, "auto", workload=10**7, lanes=2)
    lr = two.engine.long_run
    assert two.engine.path in ("torch-fp32", "torch-bf16") and not lr["kept"] and lr["eager_lanes"] == 2
    assert lr["eager_lanes_patches_per_s"] > lr["compile"]["patches_per_s"] > lr["eager_patches_per_s"]
    assert "in 2 lanes" in lr["compile"]["reason"]
    assert two.model.patches == 0 and two.model.seconds == 0  # the lanes' measurement is not counted


def test_every_long_run_compares_compile_with_the_lanes_it_would_run_in(fake_compile: dict[str, int]) -> None:
    """``apply_engine`` without ``lanes`` (``predict_imagery``, ``evaluate_imagery``): the eager path runs in one lane
    per torch thread, so the long-run rule times it in those lanes too."""
    from imagery.inference.lanes import planned_lanes

    seg = _segmenter()
    auto = engine.apply_engine(seg, "auto", workload=10**7)
    assert auto.engine.long_run["eager_lanes"] == planned_lanes(0)
    eager = engine.apply_engine(seg, "torch:fp32")  # a forced eager path: its batches split over the same lanes
    assert eager.lanes == planned_lanes(0)
