"""map_event on the real Sen12Landslides patch (Emilia-Romagna, May 2023), written as a local ItemCollection."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from imagery.data.sen12landslides import Sen12LandslidesS2
from tests.change.helpers import lonlat_box, write_items
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def sen12_items(tmp_path_factory: pytest.TempPathFactory):
    path = shared_dataset("sen12landslides_italy_4120") / "italy_s2_4120.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        patch = Sen12LandslidesS2()(path)
    folder = tmp_path_factory.mktemp("sen12items")
    items, dem, mask = write_items(patch, folder)
    return patch, items, dem, mask


def test_map_event_separates_the_real_landslides(sen12_items, tmp_path: Path, tracking_uri: str, capsys) -> None:
    from pipelines.map_event import main

    patch, items, dem, mask = sen12_items
    bbox = lonlat_box(patch.grid, inset_m=80.0)
    out = tmp_path / "event"
    argv = ["--bbox", *map(str, bbox), "--event-date", "2023-05-16", "--items", str(items), "--dem", str(dem)]
    argv += ["--out", str(out), "--pre-days", "240", "--post-days", "130", "--reference", str(mask), "--block", "64"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    val = summary["validation"]
    print(
        f"\nSen12Landslides italy_4120: fused ROC-AUC {val['roc_auc']:.3f}, object recall {val['object_recall']:.3f} "
        f"({val['n_found']}/{val['n_reference_objects']}), {summary['n_landslides']} polygons"
    )
    assert val["roc_auc"] >= 0.80
    assert val["object_recall"] >= 0.2  # measured 0.23 (6 of 26 objects) with the defaults
    assert summary["acquisitions"]["pre"][-1] == "2023-05-13" and len(summary["acquisitions"]["pre"]) == 8
    assert len(summary["acquisitions"]["post"]) == 7
    for name in (
        "pre.tif",
        "post.tif",
        "change.tif",
        "probability.tif",
        "landslides.gpkg",
        "landslides.geojson",
        "report.html",
    ):
        assert (out / name).is_file(), name
    feats = json.loads((out / "landslides.geojson").read_text())["features"]
    assert feats and {
        "id",
        "area_m2",
        "confidence",
        "mean_dndvi",
        "mean_slope_deg",
        "evidence",
        "reason",
        "pre_dates",
        "post_dates",
        "clear_obs_pre",
        "clear_obs_post",
    } <= set(feats[0]["properties"])
    conf = [f["properties"]["confidence"] for f in feats]
    assert conf == sorted(conf, reverse=True)
    assert all(f["properties"]["area_m2"] >= 500 for f in feats)
    assert np.isfinite(summary["timings"]["total_s"])


def test_map_event_with_a_temporal_model_trained_on_the_real_patch(
    sen12_items, tmp_path: Path, tracking_uri: str, capsys
) -> None:
    """PATH TEST: a pre-post model trained a few steps on the one real patch runs on the same patch's composites."""
    import torch

    from pipelines import evaluate_imagery
    from pipelines.map_event import main
    from tests.change.models import real_temporal_model

    patch, items, dem, mask = sen12_items
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny network: one thread is fastest on a loaded machine
    try:
        model = real_temporal_model(tmp_path / "model", shared_dataset("sen12landslides_italy_4120"), steps=8)
        bbox = lonlat_box(patch.grid, inset_m=80.0)
        out = tmp_path / "event"
        argv = ["--bbox", *map(str, bbox), "--event-date", "2023-05-16", "--items", str(items), "--dem", str(dem)]
        argv += ["--out", str(out), "--pre-days", "240", "--post-days", "130", "--reference", str(mask)]
        argv += ["--block", "128", "--imagery-model", str(model), "--device", "cpu", "--runtime", "torch"]
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a model that learnt from real data: no synthetic warning
            assert main(argv) == 0
        summary = json.loads((out / "summary.json").read_text())
        seg, val = summary["segmenter"], summary["validation"]
        with capsys.disabled():
            print(
                f"\nSen12Landslides italy_4120 with a {seg['temporal']} segmenter ({seg['tiles_run']}/"
                f"{seg['tiles_total']} tiles run): fused ROC-AUC {val['roc_auc']:.3f}, object recall "
                f"{val['object_recall']:.3f}"
            )
        assert seg["inputs"] == ["pre", "post"] and seg["model_fit"]["training_data"] == "real"
        assert seg["tiles_run"] >= 1 and len(seg["model_bands"]) == 21  # 10 bands x (pre, post) + slope
        assert val["roc_auc"] >= 0.80
        feats = json.loads((out / "landslides.geojson").read_text())["features"]
        assert feats and all("p_segmenter" in f["properties"] for f in feats)
        # the same model evaluated on the patch's time series: landslide-class metrics
        capsys.readouterr()
        ev = ["--model", str(model), "--data", str(shared_dataset("sen12landslides_italy_4120"))]
        assert evaluate_imagery.main([*ev, "--device", "cpu", "--runtime", "torch"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        with capsys.disabled():
            keys = ("ls_f1", "ls_iou", "ls_precision", "ls_recall")
            print("evaluate_imagery: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys))
        assert metrics["n_patches"] == 1 and metrics["labelled_pixels"] == 128 * 128
        for k in ("ls_f1", "ls_iou", "ls_precision", "ls_recall"):
            assert 0.0 <= metrics[k] <= 1.0, k
    finally:
        torch.set_num_threads(threads)
