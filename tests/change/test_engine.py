"""Blocks as tasks: Dask and local engines give the same outputs; --resume after a kill finishes the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import imagery.change.event as event_mod
from common.geo import read_raster
from pipelines.map_event import main
from tests.change.helpers import map_event_argv


def _argv(world: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return map_event_argv(*world, out, *extra, block=24)


def _same_outputs(a: Path, b: Path) -> None:
    for name in ("pre.tif", "post.tif", "change.tif", "probability.tif"):
        for band in (1, 4) if name != "probability.tif" else (1,):
            x, y = read_raster(a / name, band).array, read_raster(b / name, band).array
            assert np.array_equal(x, y, equal_nan=True), (name, band)
    for name in ("landslides.geojson", "rejected.geojson"):
        fa = json.loads((a / name).read_text())["features"]
        fb = json.loads((b / name).read_text())["features"]
        assert [f["properties"] for f in fa] == [f["properties"] for f in fb]
        assert [f["geometry"] for f in fa] == [f["geometry"] for f in fb]
    assert len(json.loads((a / "rejected.geojson").read_text())["features"]) == 1  # the harvested field, whole


def test_resume_after_a_kill_finishes_the_same(world, tmp_path: Path, tracking_uri: str, monkeypatch) -> None:
    fresh = tmp_path / "fresh"
    assert main(_argv(world, fresh)) == 0
    out = tmp_path / "out"
    real = event_mod.process_block
    calls = {"n": 0}

    def dies_on_the_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill in the middle of the run
        return real(*args, **kwargs)

    monkeypatch.setattr(event_mod, "process_block", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(world, out))
    assert not out.exists()  # nothing that looks like an output
    cache = tmp_path / ".out.blocks"
    assert len(list(cache.glob("*.npz"))) == 4
    monkeypatch.setattr(event_mod, "process_block", real)
    assert main(_argv(world, out, "--resume")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blocks_resumed"] == 4 and summary["blocks_computed"] == summary["blocks"] - 4
    _same_outputs(fresh, out)
    assert not cache.exists()


def test_resume_ignores_blocks_of_other_settings(world, tmp_path: Path, tracking_uri: str, monkeypatch) -> None:
    out = tmp_path / "out"
    real = event_mod.process_block
    calls = {"n": 0}

    def dies_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(event_mod, "process_block", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(world, out))
    monkeypatch.setattr(event_mod, "process_block", real)
    assert main(_argv(world, out, "--resume", "--min-slope-deg", "12")) == 0
    assert json.loads((out / "summary.json").read_text())["blocks_resumed"] == 0


@pytest.mark.slow  # a local Dask cluster takes about a minute to start on a loaded 2-core machine
def test_dask_engine_gives_the_same_outputs(world, tmp_path: Path, tracking_uri: str) -> None:
    local, dask = tmp_path / "local", tmp_path / "dask"
    assert main(_argv(world, local)) == 0
    assert main(_argv(world, dask, "--engine", "dask", "--workers", "2")) == 0
    assert json.loads((dask / "summary.json").read_text())["engine"] == "dask"
    _same_outputs(local, dask)
