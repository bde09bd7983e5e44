"""The memory-mapped cache and the prepare_imagery CLI; the patch plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imagery.data import L4SDataset, load_patches
from imagery.data.cache import build_cache, open_cache
from imagery.data.synthetic import write_synthetic_l4s
from imagery.plot import plot_patch, save_figure
from pipelines.prepare_imagery import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_l4s(tmp_path_factory.mktemp("syn") / "data", n_patches=6, seed=2, size=32, dtype=np.float64)


def test_cache_roundtrip_memmapped_and_transparent(syn: Path, tmp_path: Path) -> None:
    entry = build_cache(syn, tmp_path / "cache")
    assert entry["shape"] == [6, 14, 32, 32] and entry["dtype"] == "float32" and len(entry["fingerprint"]) == 64
    ref = load_patches(syn)
    ps = open_cache(tmp_path / "cache", "train")
    assert isinstance(ps.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(ps.images), ref.images)
    np.testing.assert_array_equal(np.asarray(ps.masks), ref.masks)
    assert list(ps.ids) == list(ref.ids) and ps.paths == ref.paths
    via_loader = load_patches(tmp_path / "cache")  # a cache dir is accepted transparently
    np.testing.assert_array_equal(np.asarray(via_loader.images), ref.images)
    ds = L4SDataset(tmp_path / "cache")
    assert ds[2]["id"] == int(ref.ids[2]) and np.allclose(ds[2]["image"].numpy(), ref.images[2])
    half = build_cache(syn, tmp_path / "c16", dtype="float16")
    assert half["dtype"] == "float16"
    np.testing.assert_allclose(np.asarray(open_cache(tmp_path / "c16").images), ref.images, rtol=2e-3)


def test_cache_reports_all_bad_files_and_writes_nothing(syn: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "img").mkdir(parents=True)
    (bad / "mask").mkdir()
    for f in (syn / "img").iterdir():
        (bad / "img" / f.name).write_bytes(f.read_bytes())
    for f in (syn / "mask").iterdir():
        (bad / "mask" / f.name).write_bytes(f.read_bytes())
    (bad / "img" / "image_2.h5").write_bytes(b"")
    (bad / "img" / "image_5.h5").write_text("not hdf5")
    with pytest.raises(ValueError) as info:
        build_cache(bad, tmp_path / "out")
    msg = str(info.value)
    assert "2 bad file(s)" in msg and "image_2.h5" in msg and "image_5.h5" in msg and "\n" not in msg
    assert not any((tmp_path / "out").glob("*.npy")) and not (tmp_path / "out" / "index.json").exists()


def test_open_cache_errors(tmp_path: Path, syn: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.json"):
        open_cache(tmp_path)
    build_cache(syn, tmp_path / "c")
    with pytest.raises(ValueError, match="no split 'test'"):
        open_cache(tmp_path / "c", "test")
    (tmp_path / "c" / "index.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        open_cache(tmp_path / "c")


def test_cli_builds_cache_and_logs_run(syn: Path, tmp_path: Path, tracking_uri: str) -> None:
    import mlflow

    out = tmp_path / "cache"
    assert main(["--data", str(syn), "--out", str(out), "--seed", "3", "--tracking-uri", tracking_uri]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["splits"]["train"]["ids"] == [1, 2, 3, 4, 5, 6]
    runs = mlflow.search_runs(experiment_names=["imagery-prepare"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["params.seed"] == "3" and len(runs.iloc[0]["params.data_train_sha256"]) == 64
    assert runs.iloc[0]["metrics.train_patches"] == 6


def test_cli_bad_input_exit_2_one_line(tmp_path: Path, tracking_uri: str) -> None:
    empty = tmp_path / "empty"
    (empty / "img").mkdir(parents=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.prepare_imagery",
            "--data",
            str(empty),
            "--out",
            str(tmp_path / "o"),
            "--tracking-uri",
            tracking_uri,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "no image_N.h5" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    import mlflow

    runs = mlflow.search_runs(experiment_names=["imagery-prepare"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FAILED"


def test_plot_patch_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0.5, 1.5, size=(14, 32, 32)).astype(np.float32)
    mask = (rng.random((32, 32)) < 0.1).astype(np.uint8)
    fig = plot_patch(img, mask=mask, prob=rng.random((32, 32)), pred=mask, title="t")
    assert len([a for a in fig.axes if a.get_title()]) == 4
    path = save_figure(fig, tmp_path / "p" / "patch.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="mask has shape"):
        plot_patch(img, mask=np.zeros((8, 8)))


def test_prepare_imagery_dtype_choices_match_the_cache() -> None:
    """pipelines.prepare_imagery declares --dtype without loading h5py: the same choices as imagery.data.cache."""
    from typing import get_args

    from imagery.data.cache import CACHE_DTYPES
    from pipelines.prepare_imagery import CacheDtype

    assert get_args(CacheDtype) == CACHE_DTYPES
