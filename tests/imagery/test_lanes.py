"""CPU lanes (imagery.inference.lanes): a batch split over one-core threads gives the one-stream result, in order;
the process's torch thread count is left alone; an engine network counts overlapping calls once; a scene run in
lanes writes the same map as one run as one stream."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from fusion.demo.synthetic_scene import write_synthetic_scene
from imagery.inference import Segmenter, SegmenterMeta, engine
from imagery.inference.config import SceneConfig
from imagery.inference.engine import EngineNetwork
from imagery.inference.lanes import Lanes, lane_count, planned_lanes
from imagery.inference.scene import run_scene
from imagery.models import create_model
from tests.scenes.helpers import tiny_model

KW = {"in_channels": 23, "num_classes": 2, "head": "multires", "base_width": 8}
META = SegmenterMeta("small_rau_net1", KW, 23, threshold=0.5, head="multires")


def _engine_segmenter(path: str = "torch-fp32") -> Segmenter:
    torch.manual_seed(0)
    seg = Segmenter(create_model("small_rau_net1", **KW), META, "cpu")
    return engine.apply_engine(seg, path.replace("-", ":"))


def test_lanes_give_the_one_stream_result_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    import imagery.inference.lanes as lanes_mod

    seg = _engine_segmenter()
    assert seg.lanes == lane_count(seg)  # the engine set it for its eager path
    raw = np.random.default_rng(0).random((5, 14, 64, 64)).astype(np.float32) * 2
    seg.lanes = 1
    one = seg.predict(raw, batch_size=5)
    seg.lanes = 2  # Segmenter.predict splits each batch itself (every command with an engine segmenter)
    inside = seg.predict(raw, batch_size=5)
    seen: list[int] = []
    real = lanes_mod.shared_lanes
    monkeypatch.setattr("imagery.inference.segmenter.shared_lanes", lambda n: seen.append(n) or real(n))
    with Lanes(2) as lanes:  # predict called in a lane: the lanes do not split again
        assert [len(p) for p in lanes.split(raw)] == [3, 2]
        outs = lanes.map(lambda p: seg.predict(p, batch_size=len(p)), lanes.split(raw))
        split = {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}
    assert seen == []  # predict ran inside a lane: no nested split
    for got in (inside, split):
        assert set(got) == set(one)
        for key in one:  # each patch its own result, in its place (patches differ, so an order swap would show)
            assert got[key].shape == one[key].shape
            np.testing.assert_allclose(got[key], one[key], atol=1e-5)
    assert not np.allclose(one["prob"][0], one["prob"][1])
    assert seg.model.patches == 15  # every call counted once per patch
    seg.predict(raw, batch_size=5)
    assert seen == [2]  # outside a lane it splits over the shared lanes


def test_lane_threads_run_one_torch_thread_and_leave_the_process_as_it_was() -> None:
    before = torch.get_num_threads()
    with Lanes(2) as lanes:
        inside = lanes.map(lambda _: (torch.get_num_threads(), threading.current_thread().name), [0, 1, 2, 3])
        assert torch.get_num_threads() == before
    assert {n for n, _ in inside} == {1} and all(name.startswith("lane") for _, name in inside)
    later: list[int] = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == before and later == [before]  # a thread started afterwards: the default
    with Lanes(1) as none:  # no thread: the caller's
        assert none.map(lambda _: threading.current_thread().name, [0]) == [threading.current_thread().name]


def test_lane_count_only_for_eager_torch_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    seg = _engine_segmenter()
    assert lane_count(seg, 0) == planned_lanes(0) == torch.get_num_threads()
    assert lane_count(seg, 1) == 1 and lane_count(seg, 3) == 3
    seg.engine.path = "torch-compile"  # a compiled graph fixes its threads; ONNX Runtime owns its pool
    assert lane_count(seg, 0) == 1 and lane_count(seg, 2) == 1  # even when asked for
    seg.engine.path = "onnx-int8"
    assert lane_count(seg, 0) == 1 and lane_count(seg, 2) == 1
    assert lane_count(object(), 0) == 1  # not an engine segmenter


def test_overlapping_calls_count_their_wall_time_once() -> None:
    def slow(x: torch.Tensor) -> dict[str, torch.Tensor]:
        time.sleep(0.3)
        return {"out": torch.zeros(x.shape[0], 2, 4, 4)}

    net = EngineNetwork("torch-fp32", slow, digest="d", device=torch.device("cpu"))
    threads = [threading.Thread(target=net, args=(torch.zeros(2, 3, 4, 4),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert net.patches == 4
    assert 0.29 <= net.seconds < 0.5  # both ran side by side: 0.3 s of wall time, not 0.6
    net(torch.zeros(1, 3, 4, 4))
    assert net.patches == 5 and 0.59 <= net.seconds < 0.9  # a call after them adds its own


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_scene(tmp_path_factory.mktemp("syn") / "scene", 216, scar_density=1.0, cloud_fraction=0.0)


def test_a_scene_in_lanes_writes_the_one_stream_map(synthetic: Path, tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m", ["B2", "B3", "B4", "B8"], prob=None)  # random weights: a varied map
    probs, summaries = [], []
    for lanes in (1, 2):
        cfg = SceneConfig(
            scene=str(synthetic),
            model_uri=str(model),
            out=str(tmp_path / f"o{lanes}"),
            progress=False,
            tile=64,
            overlap=16,
            batch_size=5,
            lanes=lanes,
        )
        res = run_scene(cfg, log=lambda _: None)
        summaries.append(res.summary)
        with rasterio.open(res.paths["probability.tif"]) as ds:
            probs.append(ds.read(1))
    assert [s["lanes"] for s in summaries] == [1, 2]
    assert summaries[0]["engine"]["path"] == "torch-fp32"  # the suite's pinned path: an eager one
    assert float(np.nanstd(probs[0])) > 1e-3  # a map with something in it
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-5)
    assert summaries[1]["engine"]["patches"] == summaries[0]["engine"]["patches"] == summaries[0]["tiles"]["predicted"]


def test_negative_lanes_are_refused(synthetic: Path, tmp_path: Path) -> None:
    from common.cli import UserError

    cfg = SceneConfig(scene=str(synthetic), model_uri="unused", out=str(tmp_path / "o"), lanes=-1)
    with pytest.raises(UserError, match="--lanes must be >= 0"):
        run_scene(cfg, log=lambda _: None)
    assert not (tmp_path / "o").exists()
