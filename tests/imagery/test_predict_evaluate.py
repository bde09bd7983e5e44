"""``pipelines.evaluate_imagery``: metrics of a saved segmenter on a labelled split, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import shared_dataset
from tests.imagery.test_predict import _tiny_segmenter_dir


def _metrics_from_stdout(text: str) -> dict:
    return json.loads(text[text.index("{") :])


def test_evaluate_cli_synthetic_matches_direct_computation(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from imagery.data import load_patches
    from imagery.data.synthetic import write_synthetic_l4s
    from imagery.inference.metrics import SegmentationCounts
    from imagery.inference.serving import load_segmenter
    from pipelines.evaluate_imagery import main

    root = write_synthetic_l4s(tmp_path / "data", n_patches=6, seed=1, size=64)
    model_dir = _tiny_segmenter_dir(tmp_path / "m", threshold=0.45)
    assert main(["--model", str(model_dir), "--data", str(root), "--split", "train", "--device", "cpu"]) == 0
    printed = _metrics_from_stdout(capsys.readouterr().out)
    ps = load_patches(root, "train")
    pred = load_segmenter(str(model_dir), device="cpu").predict(ps.images)
    counts = SegmentationCounts()
    counts.update(pred["mask"], ps.masks)
    expected = counts.compute()
    assert printed["n_patches"] == 6 and printed["threshold"] == pytest.approx(0.45)
    for key in ("ls_f1", "ls_iou", "ls_precision", "ls_recall", "f1_2class_mean", "miou_2class"):
        assert printed[key] == pytest.approx(expected[key], abs=1e-6), key
    assert any(k.startswith("patch_") for k in printed)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["metrics.ls_f1"] == pytest.approx(expected["ls_f1"], abs=1e-6)


def test_evaluate_cli_real_patches_with_tta_vote_morphology(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from pipelines.evaluate_imagery import main

    root = shared_dataset("landslide4sense_camduc")
    model_dir = _tiny_segmenter_dir(tmp_path / "m")
    code = main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(root),
            "--split",
            "train",
            "--tta",
            "rot4",
            "--vote",
            "--morphology",
            "open",
            "--threshold",
            "0.5",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    m = _metrics_from_stdout(capsys.readouterr().out)
    assert m["n_patches"] == 11
    assert all(0.0 <= m[k] <= 1.0 for k in ("ls_f1", "ls_iou", "miou_2class"))


def test_evaluate_cli_bad_input(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from common.cli import run_main
    from imagery.data.synthetic import write_synthetic_l4s
    from pipelines.evaluate_imagery import main

    model_dir = _tiny_segmenter_dir(tmp_path / "m")
    assert run_main(main, ["--model", str(model_dir), "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    root = write_synthetic_l4s(tmp_path / "d", n_patches=2, seed=0, size=32)
    for f in (root / "mask").iterdir():
        f.unlink()
    code = run_main(main, ["--model", str(model_dir), "--data", str(root), "--split", "train"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    np.save(tmp_path / "x.npy", np.zeros(3))
    assert run_main(main, ["--model", str(tmp_path / "x.npy"), "--data", str(root)]) == 2
