"""Training loop: schedules, a short run that beats the all-background baseline, resume equivalence, CLIs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from imagery.training import Trainer
from imagery.training.config import TrainConfig
from imagery.training.optim import cosine_factor, step_factor
from imagery.transforms import Preprocessor


def test_step_schedule_matches_spec_and_scales() -> None:
    lrs = [step_factor(e, 65) * 1e-4 for e in range(65)]
    assert lrs[7] == pytest.approx(1e-4) and lrs[8] == pytest.approx(5e-5)
    assert lrs[14] == pytest.approx(5e-5) and lrs[15] == pytest.approx(2e-5)
    assert lrs[49] == pytest.approx(5e-7) and lrs[50] == pytest.approx(1e-7) and lrs[64] == pytest.approx(1e-7)
    # a 13-epoch run: boundaries scaled by 13/65 = 0.2 -> first drop at epoch 1.6
    assert step_factor(1.5, 13) == 1.0 and step_factor(1.6, 13) == 0.5 and step_factor(12.9, 13) == 0.001


def test_cosine_with_warmup() -> None:
    vals = [cosine_factor(s, 100, 10) for s in range(100)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert vals[10] == pytest.approx(1.0) and vals[55] == pytest.approx(0.5, abs=0.02) and vals[99] < 0.01
    assert all(a >= b for a, b in zip(vals[10:], vals[11:], strict=False))


def _data(n: int = 40, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    from imagery.data.synthetic import synth_patch

    rng = np.random.default_rng(seed)
    pairs = [synth_patch(rng, has_landslide=i % 4 != 0, size=size, cloud_fraction=0.0, n_scars=3) for i in range(n)]
    raw = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    x = Preprocessor(17).transform_all(raw, torch.device("cpu"))
    cut = int(0.75 * n)
    return x[:cut], masks[:cut], x[cut:], masks[cut:]


def _cfg(tmp: Path | None = None, **kw: object) -> TrainConfig:
    cfg = TrainConfig(epochs=2, batch_size=8, progress=False, device="cpu", bn_momentum=0.1)
    cfg.model.channel_set, cfg.model.width, cfg.model.head = 17, 4, "mono"
    cfg.optim.lr, cfg.optim.schedule = 3e-3, "constant"
    cfg.checkpoint_dir = str(tmp) if tmp else None
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg.validate()


def _trainer(cfg: TrainConfig, data) -> Trainer:
    from imagery.models import create_model
    from imagery.training.losses import build_criterion

    torch.manual_seed(cfg.seed)
    model = create_model("rau_net1", **cfg.model.create_kwargs())
    return Trainer(cfg, model, build_criterion("focal_iou", cfg.model.head), *data, device=torch.device("cpu"))


def test_short_training_beats_all_background_baseline() -> None:
    data = _data(n=24, size=48)
    cfg = _cfg(epochs=6)
    result = _trainer(cfg, data).fit()
    # all-background prediction has landslide F1 = 0; the tuned model must clearly beat it
    assert result.val_metrics["ls_f1"] >= 0.3, result.history
    assert 0.3 <= result.threshold <= 0.99
    assert result.best_score == max(h["val_ls_f1"] for h in result.history)
    assert len(result.history) == 6 and result.val_probs.shape == data[3].shape


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path: Path) -> None:
    data = _data(n=16, size=32)
    straight = _trainer(_cfg(tmp_path / "a", epochs=2), data)
    r_full = straight.fit()
    first = _trainer(_cfg(tmp_path / "b", epochs=1), data)
    first.fit()
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["epoch_done"] == 1
    resumed = _trainer(_cfg(tmp_path / "b", epochs=2, resume=True), data)
    r_resumed = resumed.fit()
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert r_full.history == r_resumed.history
    assert r_full.threshold == r_resumed.threshold


def test_resume_on_another_world_size_says_the_global_batch_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data(n=8, size=32)
    _trainer(_cfg(tmp_path, epochs=1), data).fit()
    path = tmp_path / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    assert ck["world_size"] == 1
    capsys.readouterr()
    _trainer(_cfg(tmp_path, epochs=1, resume=True), data).load_checkpoint()
    assert "--resume" not in capsys.readouterr().err  # same world size: nothing to say
    ck["world_size"] = 2  # as if a 2-rank torchrun job had written it
    torch.save(ck, path)
    _trainer(_cfg(tmp_path, epochs=1, resume=True), data).load_checkpoint()
    err = capsys.readouterr().err
    assert "checkpoint written by 2 rank(s), resuming on 1" in err and "global batch of 8 patches is kept" in err


def test_resume_without_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(_cfg(tmp_path, resume=True), _data(n=8, size=32)).fit()


def _cli(tmp: Path, *extra: str) -> list[str]:
    return [
        "--n-synthetic",
        "12",
        "--synthetic-size",
        "32",
        "--width",
        "4",
        "--channels",
        "17",
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--bn-momentum",
        "0.1",
        "--no-progress",
        "--device",
        "cpu",
        "--overlays",
        "2",
        *extra,
    ]


def test_train_cli_logs_model_artifacts_and_oof(tmp_path: Path, tracking_uri: str) -> None:
    from imagery.inference.serving import load_segmenter
    from pipelines.train_imagery import run

    out = run(_cli(tmp_path, "--checkpoint-dir", str(tmp_path / "ck"), "--no-augment"))
    client = mlflow.MlflowClient()
    run_info = client.get_run(out.run_id)
    assert run_info.info.status == "FINISHED"
    assert run_info.data.params["model.width"] == "4" and "data_sha256" in run_info.data.params
    arts = {a.path for a in client.list_artifacts(out.run_id)}
    assert {"oof_predictions.csv", "segmenter", "plots", "overlays", "config.json"} <= arts
    seg = load_segmenter(out.model_uris[0], device="cpu")
    assert seg.threshold == pytest.approx(run_info.data.metrics["threshold"])
    # what the model learnt from, for the checks before a scene (issue 17): 10 m, band statistics, synthetic
    assert seg.meta.gsd_m == 10.0 and set(seg.meta.band_stats) == set(seg.bands)
    assert all(s["std"] > 0 for s in seg.meta.band_stats.values())
    assert seg.meta.training_data["kind"] == "synthetic" and seg.meta.synthetic
    assert seg.meta.training_data["fingerprint"] == run_info.data.params["data_sha256"]
    assert list(out.oof.columns) == ["region_id", "y_true", "p_oof", "fold"]
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()
    hist = client.get_metric_history(out.run_id, "val_ls_f1")
    assert len(hist) >= 1


def test_kfold_cli_nested_runs_and_oof_cover_every_patch(tmp_path: Path, tracking_uri: str) -> None:
    from pipelines.train_imagery import run

    out = run(_cli(tmp_path, "--folds", "2", "--no-augment"))
    client = mlflow.MlflowClient()
    parent = client.get_run(out.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out.run_id}'")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert "test_ls_f1_mean" in parent.data.metrics and "test_ls_f1_std" in parent.data.metrics
    assert sorted(out.oof["region_id"]) == list(range(1, 13))
    assert set(out.oof["fold"]) == {0, 1}
    assert out.oof["p_oof"].between(0, 1).all()


def test_train_cli_bad_input(tmp_path: Path, tracking_uri: str, capsys) -> None:
    from common.cli import run_main
    from pipelines.train_imagery import main

    code = run_main(main, _cli(tmp_path, "--data", str(tmp_path / "missing")))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "missing" in err and "\n" not in err
    runs = mlflow.search_runs(search_all_experiments=True)
    assert (runs["status"] == "FAILED").all() and len(runs) == 1
    assert run_main(main, _cli(tmp_path, "--optimizer", "lbfgs")) == 2
    assert "--optimizer" in capsys.readouterr().err


def test_cli_defaults_and_choices_match_the_library() -> None:
    """train_imagery declares its flags without importing torch: its defaults are TrainConfig's and its
    --cutmix-mode / --precision choices the implementing modules' (imagery.transforms.augment, imagery.device)."""
    from typing import get_args

    from common.tracking import config_to_dict
    from imagery.device import PRECISIONS
    from imagery.training import TrainConfig
    from imagery.training.study_tables import DEFAULT_EXPERIMENT
    from imagery.transforms.augment import CUTMIX_MODES
    from pipelines import study_tables, train_imagery

    assert study_tables.EXPERIMENT == DEFAULT_EXPERIMENT == train_imagery.EXPERIMENT
    assert get_args(train_imagery.CutmixMode) == CUTMIX_MODES
    assert get_args(train_imagery.TrainPrecision) == PRECISIONS
    cfg = train_imagery.library_config(train_imagery.COMMAND.parse([]))
    assert config_to_dict(cfg) == config_to_dict(TrainConfig().validate())
