"""The seed study's protocol against the authors' definitions: folds by construction, CutMix by construction and
statistically, the checkpoint/threshold selection on the test fold, study_* names and tags, the deck tables."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from common.cli import UserError
from imagery.data.splits import natural_key, natural_order
from imagery.inference.metrics import segmentation_metrics
from imagery.training.protocol import (
    STUDY_THRESHOLDS,
    StudySelector,
    study_deviations,
    study_mid_batch,
    study_scores_after,
    study_threshold_sweep,
)
from imagery.transforms.augment import DonorPool, augment_batch, cutmix_study


# ------------------------------------------------------------------------------------------------ folds
def test_natural_order_and_the_study_folds_by_construction() -> None:
    from imagery.data.patches import PatchSet
    from imagery.training.experiment import natural_fold_positions

    assert natural_key("image_10.h5") > natural_key("image_9.h5")
    n = 3799
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, n + 1))  # files listed in any order
    names = [f"image_{i}.h5" for i in ids]
    order = natural_order(names)
    assert [names[i] for i in order[:3]] == ["image_1.h5", "image_2.h5", "image_3.h5"]
    ps = PatchSet(np.zeros((n, 1, 1, 1), np.float32), None, ids, paths=[f"/data/img/{m}" for m in names], bands=("B2",))
    folds = natural_fold_positions(ps, 5)
    # the authors: fold K tests on [int(N*(5-K)/5), int(N*(6-K)/5)) of the natural order; fold 1 = the last block
    for k, (train, test) in enumerate(folds, start=1):
        lo, hi = int(n * (5 - k) / 5), int(n * (6 - k) / 5)
        assert sorted(ids[test]) == list(range(lo + 1, hi + 1)), k
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == n
    assert (len(folds[0][0]), len(folds[0][1])) == (3039, 760)
    assert (len(folds[4][0]), len(folds[4][1])) == (3040, 759)


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["chip_a.tif", "chip_a.tif", "chip_b.tif"], "1 name.s. repeat, e.g. 'chip_a.tif'"),
        (["image_1.h5", "img_2.h5", "image_3.h5"], r"found image_<N>.h5 \(2\), img_<N>.h5 \(1\)"),
        (["north.tif", "south.tif"], "found north.tif"),
    ],
)
def test_names_that_do_not_sort_naturally_are_one_line_errors(names: list[str], match: str) -> None:
    with pytest.raises(UserError, match=match) as err:
        natural_order(names)
    assert "\n" not in str(err.value) and "do not sort naturally" in str(err.value)


# ------------------------------------------------------------------------------------------------ CutMix
def _pool(m: int = 8, n_neg: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """m positive donors (value m+1 in every channel, landslide on row m only) and n_neg landslide-free patches."""
    x = torch.zeros(m + n_neg, 2, size, size)
    y = torch.zeros(m + n_neg, size, size, dtype=torch.uint8)
    for d in range(m):
        x[d] = d + 1.0
        y[d, d] = 1
    x[m:] = 100.0
    return x, y


def test_study_cutmix_by_construction() -> None:
    px, py = _pool()
    pool = DonorPool.from_training(px, py)
    assert pool.index.tolist() == list(range(8))  # only the landslide-positive patches are donors
    images = torch.zeros(500, 2, 8, 8)
    masks = torch.zeros(500, 8, 8, dtype=torch.uint8)
    masks[:, 7, 0] = 255  # an unlabelled pixel outside every paste stays unlabelled
    masks[0, 7, 7] = 1  # own landslide pixels stay (masks are OR-ed)
    out_x, out_y = cutmix_study(images, masks, pool, torch.Generator().manual_seed(0))
    changed = out_x[:, 0] != 0
    # every pasted pixel carries its donor's values, all channels, exactly on the donor's landslide row
    rows = torch.arange(8).view(1, 8, 1).expand(500, 8, 8).float() + 1
    assert torch.equal(out_x[:, 0][changed], rows[changed]) and torch.equal(out_x[:, 1], out_x[:, 0])
    assert not (out_x == 100).any()  # never a landslide-free patch
    assert torch.equal(out_y == 1, changed | (masks == 1))
    corner = changed[:, 7, 0]
    assert (out_y[:, 7, 0][~corner] == 255).all() and (out_y[:, 7, 0][corner] == 1).all() and corner.any()
    assert out_y[0, 7, 7] == 1


def test_study_cutmix_statistics_match_the_authors_rule() -> None:
    """n ~ U{0, 1, 2} pastes per patch, each donor ~ U(positives): distinct donors per patch are 0 / 1 / 2 with
    probability 1/3, 1/3 + 1/(3m), (1 - 1/m)/3, donors equally likely; about one paste per patch (the batch-member
    'mask' mode of the honest protocol: far fewer)."""
    m, n = 8, 6000
    px, py = _pool(m)
    pool = DonorPool.from_training(px, py)
    out_x, _ = cutmix_study(
        torch.zeros(n, 2, 8, 8), torch.zeros(n, 8, 8, dtype=torch.uint8), pool, torch.Generator().manual_seed(1)
    )
    pasted = torch.stack([(out_x[:, 0, d, 0] == d + 1) for d in range(m)], dim=1)  # (n, m): donor d present
    distinct = pasted.sum(1).numpy()
    freq = np.bincount(distinct, minlength=3) / n
    expected = np.array([1 / 3, 1 / 3 + 1 / (3 * m), (1 - 1 / m) / 3])
    np.testing.assert_allclose(freq, expected, atol=0.025)
    donor_share = pasted.float().mean(0).numpy() / pasted.float().mean(0).numpy().mean()
    np.testing.assert_allclose(donor_share, 1.0, atol=0.12)
    # the honest protocol's 'mask' mode: one batch member with p = 0.7, often itself or landslide-free
    batch_x = torch.cat([px[:8], px[8:12]]).repeat(50, 1, 1, 1)
    batch_y = torch.cat([py[:8], py[8:12]]).repeat(50, 1, 1)
    hx, _ = augment_batch(
        batch_x, batch_y, torch.Generator().manual_seed(2), rot90=False, flip=False, cutmix=True, cutmix_mode="mask"
    )
    gained = ((hx[:, 0] != batch_x[:, 0]).flatten(1).any(1)).float().mean().item()
    assert gained < 0.6 and pasted.sum(1).float().mean().item() > 0.9


def test_study_cutmix_through_augment_batch_is_seeded_and_outcome_independent() -> None:
    px, py = _pool()
    pool = DonorPool.from_training(px, py)
    x, y = torch.zeros(16, 2, 8, 8), torch.zeros(16, 8, 8, dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = augment_batch(x, y, g1, rot90=True, flip=False, cutmix=True, cutmix_mode="study", donors=pool)
    b = augment_batch(x, y, g2, rot90=True, flip=False, cutmix=True, cutmix_mode="study", donors=pool)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the random stream does not depend on what was pasted: another pool of the same size leaves the same state
    g3 = torch.Generator().manual_seed(5)
    other = DonorPool.from_training(px.flip(0), py.flip(0))
    augment_batch(x, y, g3, rot90=True, flip=False, cutmix=True, cutmix_mode="study", donors=other)
    assert torch.equal(g1.get_state(), g3.get_state())
    with pytest.raises(ValueError, match="pass donors="):
        augment_batch(x, y, g1, cutmix=True, cutmix_mode="study")


# ------------------------------------------------------------------------------------------------ selection
def test_study_selector_keeps_on_either_score_and_resets_both() -> None:
    sel = StudySelector()
    seq = [(0.50, 0.40), (0.60, 0.30), (0.55, 0.35), (0.54, 0.34), (0.70, 0.20), (0.65, 0.25), (0.64, 0.24)]
    kept = [sel.update(f, m) for f, m in seq]
    # (0.6, 0.3) is kept although its mIoU fell; then (0.55, 0.35) because its mIoU beats 0.3; (0.54, 0.34) not
    assert kept == [True, True, True, False, True, True, False]
    assert (sel.best_f1, sel.best_miou) == (0.65, 0.25)


def test_study_evaluation_points() -> None:
    assert not study_scores_after(0, 65) and study_scores_after(1, 65) and study_scores_after(0, 1)
    assert study_mid_batch(35, 65, 254) is None and study_mid_batch(36, 65, 254) == 127
    assert study_mid_batch(1, 3, 5) is None and study_mid_batch(2, 3, 5) == 2  # 35 scaled by 3/65 = 1.6


def test_study_threshold_sweep_by_hand() -> None:
    rng = np.random.default_rng(3)
    masks = (rng.random((4, 16, 16)) < 0.2).astype(np.uint8)
    probs = np.clip(masks * 0.6 + rng.random((4, 16, 16)) * 0.5, 0, 1).astype(np.float32)
    t, table = study_threshold_sweep(probs, masks)
    by_hand = [segmentation_metrics(probs, masks, float(th))["f1_2class_mean"] for th in STUDY_THRESHOLDS]
    np.testing.assert_allclose(table["f1_2class_mean"], by_hand, atol=1e-12)
    assert t == float(STUDY_THRESHOLDS[int(np.argmax(by_hand))])


def _tiny_data(n: int = 16, size: int = 32):
    from imagery.data.synthetic import synth_patch
    from imagery.transforms import Preprocessor

    rng = np.random.default_rng(0)
    pairs = [synth_patch(rng, has_landslide=i % 4 != 0, size=size, cloud_fraction=0.0, n_scars=3) for i in range(n)]
    x = Preprocessor(17).transform_all(np.stack([p[0] for p in pairs]), torch.device("cpu"))
    masks = np.stack([p[1] for p in pairs])
    return x[:12], masks[:12], x[12:], masks[12:]


def test_trainer_selects_on_the_test_fold_as_the_authors() -> None:
    from imagery.inference.segmenter import infer_probs
    from imagery.models import create_model
    from imagery.training import Trainer
    from imagery.training.config import TrainConfig
    from imagery.training.losses import build_criterion

    cfg = TrainConfig(epochs=3, batch_size=4, progress=False, device="cpu", bn_momentum=0.1, protocol="study")
    cfg.model.channel_set, cfg.model.width, cfg.model.head = 17, 4, "mono"
    cfg.optim.schedule, cfg.optim.lr = "constant", 3e-3
    cfg.augment.cutmix, cfg.augment.cutmix_mode, cfg.shuffle = True, "study", False
    cfg.data.folds, cfg.data.folds_order = 5, "natural"
    cfg.validate()
    torch.manual_seed(0)
    model = create_model("rau_net1", **cfg.model.create_kwargs())
    trainer = Trainer(cfg, model, build_criterion("focal_iou", "mono"), *_tiny_data(), device=torch.device("cpu"))
    result = trainer.fit()
    # scored after epochs 2 and 3 and before the middle batch of epoch 3 (35 scaled to 1.6): never after epoch 1
    assert [e["epochs_trained"] for e in result.evaluations] == [2.0, 2 + 1 / 3, 3.0]
    replay = StudySelector()
    kept = [replay.update(e["f1_2class_mean"], e["miou_2class"]) for e in result.evaluations]
    assert [bool(e["kept"]) for e in result.evaluations] == kept
    last_kept = max(i for i, k in enumerate(kept) if k)
    assert result.selected_epoch == result.evaluations[last_kept]["epochs_trained"]
    # the returned model is the kept checkpoint: its test-fold scores at argmax are the kept evaluation's
    probs, _ = infer_probs(result.model, trainer.val_x, batch_size=8)
    scores = segmentation_metrics(probs, trainer.val_y, 0.5)
    assert scores["f1_2class_mean"] == pytest.approx(result.evaluations[last_kept]["f1_2class_mean"], abs=1e-9)
    assert result.val_metrics["f1_2class_mean"] == pytest.approx(scores["f1_2class_mean"], abs=1e-9)
    assert result.threshold in set(STUDY_THRESHOLDS.tolist())
    assert trainer.donors is not None and len(trainer.donors) == 9  # 12 training patches, every 4th negative


def test_study_deviations_name_what_differs_from_the_recipe() -> None:
    from imagery.training.config import TrainConfig

    cfg = TrainConfig(protocol="study", precision="fp32", shuffle=False)
    cfg.data.path, cfg.data.folds, cfg.data.folds_order = "L4S", 5, "natural"
    cfg.augment.cutmix, cfg.augment.cutmix_mode = True, "study"
    assert study_deviations(cfg) == []
    cfg.epochs, cfg.data.path = 2, None
    assert study_deviations(cfg) == ["data=synthetic (study: the L4S TrainData)", "epochs=2 (study: 65)"]


# ------------------------------------------------------------------------------------------------ commands
def _cli(*extra: str) -> list[str]:
    return [
        "--n-synthetic", "10", "--synthetic-size", "32", "--width", "4", "--channels", "17", "--head", "mono",
        "--epochs", "1", "--batch-size", "4", "--bn-momentum", "0.1", "--no-progress", "--device", "cpu",
        "--overlays", "0", "--no-log-flavour", *extra,
    ]  # fmt: skip


def test_study_cli_names_tags_folds_and_tables(tmp_path: Path, tracking_uri: str) -> None:
    from pipelines.study_tables import run as tables
    from pipelines.train_imagery import run

    out = run(_cli("--protocol", "study", "--fold", "1", "--study-row", "postprocessing/all"))
    client = mlflow.MlflowClient()
    parent = client.get_run(out.run_id)
    child = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out.run_id}'")[0]
    for run_ in (parent, child):
        assert run_.data.tags["protocol"] == "study: selected on the test fold"
        assert (
            run_.data.tags["landslide.kind"] == "imagery-study" and run_.data.tags["study_row"] == "postprocessing/all"
        )
        assert "epochs=1 (study: 65)" in run_.data.tags["study_deviations"]
        # nothing that reads like an honest score
        assert not [k for k in run_.data.metrics if k.startswith(("test_", "val_", "threshold"))]
    assert child.data.tags["fold"] == "1" and child.data.params["fold_index"] == "1"
    assert {"study_f1_2class_mean", "study_miou_2class", "study_threshold", "study_pp_tta_f1_2class_mean"} <= set(
        child.data.metrics
    )
    assert "study_f1_2class_mean_mean" in parent.data.metrics
    # fold 1 tests on the last 20 % of the natural order: ids 9 and 10 of 1..10 (int(0.8 * 10) = 8)
    assert sorted(out.oof["region_id"]) == [9, 10]
    assert child.data.params["n_train"] == "8" and child.data.params["n_test"] == "2"
    assert child.data.params["precision"] == "fp32" and child.data.params["shuffle"] == "False"
    assert child.data.params["augment.cutmix_mode"] == "study" and child.data.params["augment.cutmix"] == "True"
    # the fusion command refuses a study run as a base model
    from fusion.experiment import run_kind

    assert run_kind(client, parent) == "imagery-study"
    # the deck tables show this run's numbers in the post-processing table, every other row 'not run'
    md = tmp_path / "tables.md"
    res = tables(["--out", str(md), "--tracking-uri", tracking_uri])
    text = md.read_text()
    assert res is not None and ("postprocessing", "argmax", "study") in res.found
    value = child.data.metrics["study_pp_threshold_0.95_f1_2class_mean"]
    assert f"| 0.7463 | 0.6597 | 0.4990 |  | rau-net.md; mIoU: LOG k1-post-processed.out | {value:.4f}*" in text
    assert "| fold 1 | 0.7242 | 0.6388 | 0.4580 |" in text and text.count("not run") > 50
    for title in ("Loss functions", "Input channel sets", "heads", "Backbones", "Small models", "Optimisers",
                  "Post-processing", "Five folds"):  # fmt: skip
        assert title in text
    logged = client.search_runs([parent.info.experiment_id], "tags.`landslide.kind` = 'study-tables'")
    assert len(logged) == 1 and "study_tables.md" in {a.path for a in client.list_artifacts(logged[0].info.run_id)}


def test_honest_natural_folds_match_the_study_blocks(tracking_uri: str) -> None:
    from pipelines.train_imagery import run

    out = run(_cli("--folds", "5", "--folds-order", "natural", "--fold", "0", "--no-augment"))
    assert sorted(out.oof["region_id"]) == [9, 10]  # 0-based fold 0 = the study's fold 1
    parent = mlflow.MlflowClient().get_run(out.run_id)
    assert parent.data.tags["protocol"] == "honest: selected on a validation split"
    assert "test_ls_f1_mean" in parent.data.metrics and not [k for k in parent.data.metrics if "study" in k]


def test_plan_lists_every_row_and_the_committed_plan_is_current(tmp_path: Path) -> None:
    from imagery.training.study_tables import plan_markdown, run_tags
    from pipelines.study_tables import run as tables

    path = tmp_path / "plan.md"
    assert tables(["--plan", str(path)]) is None
    text = path.read_text()
    for tag in run_tags():
        assert "--protocol study" in text and f"--study-row {tag}" in text, tag
    assert text.count("--protocol honest --folds 5 --folds-order natural") == len(run_tags())
    committed = Path(__file__).resolve().parents[2] / "benchmarks" / "study_plan.md"
    assert committed.read_text() == plan_markdown(), "regenerate: python -m pipelines.study_tables --plan"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("--protocol", "study", "--fold", "0"), "--fold must be in 1..5 under --protocol study"),
        (("--protocol", "study", "--fold", "6"), "--fold must be in 1..5 under --protocol study"),
        (("--protocol", "study", "--folds-order", "shuffled"), "--folds-order must be natural"),
        (("--loss", "tverski"), "expected a study name .*tversky.* or a literature name .*tversky_landslide"),
        (("--study-row", "losses/tverski"), "--study-row 'losses/tverski': expected one of losses/ce"),
        (("--sync-bn",), "--sync-bn applies under torchrun"),
    ],
)
def test_study_bad_inputs_are_one_line_errors(extra: tuple[str, ...], match: str, tracking_uri: str, capsys) -> None:
    from common.cli import run_main
    from pipelines.train_imagery import main

    assert run_main(main, _cli(*extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert __import__("re").search(match, err), err


def test_study_protocol_refuses_names_that_do_not_sort(tracking_uri: str) -> None:
    from common.tracking import tracked_run
    from imagery.data.patches import PatchSet
    from imagery.training.config import TrainConfig
    from imagery.training.experiment import run_folds

    cfg = TrainConfig(protocol="study", epochs=1, device="cpu", progress=False)
    cfg.data.folds, cfg.data.folds_order = 5, "natural"
    ps = PatchSet(
        np.zeros((6, 14, 16, 16), np.float32),
        np.zeros((6, 16, 16), np.uint8),
        np.arange(6),
        paths=["scene_a.tif"] * 3 + ["scene_b.tif"] * 3,  # tiles of two chips
    )
    with tracked_run("t", cfg), pytest.raises(UserError, match="patch names do not sort naturally: 2 name"):
        run_folds(cfg, "t", patches=ps)
