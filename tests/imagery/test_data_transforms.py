"""Cleaning, normalisation, augmentation and splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imagery.data.bands import L4S_CLIP_MAX, L4S_MEAN, L4S_STD, band_index
from imagery.data.splits import (
    contiguous_folds,
    holdout_split,
    kfold_splits,
    read_groups,
    read_splits,
    write_splits,
)
from imagery.transforms.augment import augment_batch
from imagery.transforms.normalize import Normalizer, clean_image


def test_clean_image_replaces_and_counts_nonfinite_and_clips_cirrus() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, size=(2, 14, 8, 8)).astype(np.float64)
    x[0, 3, 0, 0] = np.nan
    x[1, 7, 2, 2] = np.inf
    x[1, 7, 3, 3] = -np.inf
    x[0, band_index("B10"), 1, 1] = 50.0
    x[0, 5, 4, 4] = -0.3
    y, n = clean_image(x)
    assert n == 3 and np.isfinite(y).all() and y.dtype == np.float32
    assert y[0, 3, 0, 0] == pytest.approx(np.median(x[0, 3][np.isfinite(x[0, 3])]), rel=1e-5)
    assert y[0, band_index("B10"), 1, 1] == L4S_CLIP_MAX[band_index("B10")]
    assert y[0, 5, 4, 4] == 0.0
    untouched = np.isfinite(x) & (x >= 0) & (x <= L4S_CLIP_MAX[None, :, None, None])
    np.testing.assert_allclose(y[untouched], x[untouched], rtol=1e-6)
    y1, n1 = clean_image(x[0])
    assert y1.shape == (14, 8, 8) and n1 == 1
    with pytest.raises(ValueError, match="expects"):
        clean_image(np.zeros((13, 4, 4)))


def test_normalizer_modes_numpy_torch_and_json() -> None:
    rng = np.random.default_rng(1)
    imgs = rng.normal(2.0, 0.5, size=(6, 14, 8, 8)).astype(np.float32)
    l4s = Normalizer("l4s")
    np.testing.assert_allclose(l4s(imgs[0]), (imgs[0] - L4S_MEAN[:, None, None]) / L4S_STD[:, None, None], rtol=1e-5)
    feats = rng.normal(size=(2, 23, 4, 4)).astype(np.float32)
    out = l4s(feats)
    np.testing.assert_array_equal(out[:, 14:], feats[:, 14:])  # engineered channels unchanged

    fold = Normalizer("fold").fit(imgs)
    z = fold(imgs)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    zt = fold(torch.from_numpy(imgs))
    assert isinstance(zt, torch.Tensor)
    np.testing.assert_allclose(zt.numpy(), z, atol=1e-5)
    back = Normalizer.from_dict(json.loads(json.dumps(fold.to_dict())))
    np.testing.assert_allclose(back(imgs), z, atol=1e-6)

    bm = Normalizer("band_mean").fit(imgs)
    np.testing.assert_allclose(bm(imgs).mean(axis=(0, 2, 3)), 1.0, atol=1e-4)
    np.testing.assert_array_equal(Normalizer("none")(imgs), imgs)

    with pytest.raises(ValueError, match="must be fitted"):
        Normalizer("fold")(imgs)
    with pytest.raises(ValueError, match="fitted on 14 channels"):
        fold(feats)
    with pytest.raises(ValueError, match="unknown normalisation mode 'zscore'"):
        Normalizer("zscore")
    with pytest.raises(ValueError, match="'mode'"):
        Normalizer.from_dict({"mean": [1.0]})


def _batch(b: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    imgs = torch.rand(b, 3, size, size, generator=g)
    masks = (torch.rand(b, size, size, generator=g) < 0.2).long()
    return imgs, masks


def test_augment_is_seeded_and_keeps_image_mask_aligned() -> None:
    imgs, masks = _batch()
    # channel 0 = the mask itself, so alignment can be checked after any transform
    imgs[:, 0] = masks.float()
    kw = {"rot90": True, "flip": True, "rotate_any": False, "cutmix": True, "p": 0.9}
    a_i, a_m = augment_batch(imgs, masks, torch.Generator().manual_seed(7), **kw)
    b_i, b_m = augment_batch(imgs, masks, torch.Generator().manual_seed(7), **kw)
    c_i, _ = augment_batch(imgs, masks, torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a_i, b_i) and torch.equal(a_m, b_m)
    assert not torch.equal(a_i, c_i)
    assert not torch.equal(a_i, imgs)
    assert torch.equal(a_i[:, 0], a_m.float())
    assert a_i.device == imgs.device and a_m.dtype == masks.dtype


def test_rot90_is_a_pure_rotation_and_p0_is_identity() -> None:
    imgs, masks = _batch(b=8)
    out_i, out_m = augment_batch(imgs, masks, torch.Generator().manual_seed(0), flip=False, p=1.0)
    for i in range(8):
        matches = [q for q in range(1, 4) if torch.equal(out_i[i], torch.rot90(imgs[i], q, dims=(-2, -1)))]
        assert len(matches) == 1
        assert torch.equal(out_m[i], torch.rot90(masks[i], matches[0], dims=(-2, -1)))
    same_i, same_m = augment_batch(imgs, masks, torch.Generator().manual_seed(0), flip=False, p=0.0)
    assert torch.equal(same_i, imgs) and torch.equal(same_m, masks)


def test_rotate_any_and_cutmix_box() -> None:
    imgs, masks = _batch(b=4, size=32)
    imgs[:, 0] = masks.float()
    r_i, r_m = augment_batch(
        imgs, masks, torch.Generator().manual_seed(3), rot90=False, flip=False, rotate_any=True, p=1.0
    )
    assert r_m.dtype == masks.dtype and set(r_m.unique().tolist()) <= {0, 1}
    agree = ((r_i[:, 0] > 0.5).long() == r_m).float().mean()
    assert agree > 0.9
    # cutmix box: every changed pixel comes from one donor of the batch, images and masks alike
    ids = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 32, 32).clone()
    lab = torch.arange(4).view(4, 1, 1).expand(4, 32, 32).clone()
    c_i, c_m = augment_batch(ids, lab, torch.Generator().manual_seed(5), rot90=False, flip=False, cutmix=True, p=1.0)
    assert torch.equal(c_i[:, 0].long(), c_m)
    changed = (c_m != lab).float().mean(dim=(1, 2))
    assert (changed > 0).any() and (changed <= 0.5 + 1e-6).all()


def test_augment_rejects_bad_shapes() -> None:
    imgs, masks = _batch()
    with pytest.raises(ValueError, match="masks must be"):
        augment_batch(imgs, masks[:, :8], torch.Generator())
    with pytest.raises(ValueError, match="p must be in"):
        augment_batch(imgs, masks, torch.Generator(), p=2.0)


def test_holdout_and_kfold_are_seeded_and_partition_ids(tmp_path: Path) -> None:
    ids = np.arange(100, 150)
    tr, va = holdout_split(ids, 0.2, seed=3)
    assert len(va) == 10 and np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == 50
    tr2, va2 = holdout_split(ids, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, holdout_split(ids, 0.2, seed=4)[1])
    folds = kfold_splits(ids, k=5, seed=1)
    tests = np.concatenate([te for _, te in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(tests), ids)
    for train, test in folds:
        assert np.intersect1d(train, test).size == 0 and train.size + test.size == 50
    path = write_splits(tmp_path / "splits.json", folds, meta={"seed": 1})
    back = read_splits(path)
    for (a, b), (c, d) in zip(folds, back, strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d)


def test_grouped_and_contiguous_folds(tmp_path: Path) -> None:
    ids = np.arange(40)
    groups = ids // 4  # 10 tiles of 4 patches
    for train, test in kfold_splits(ids, k=5, seed=0, groups=groups):
        assert not set(groups[train]) & set(groups[test])
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in zip(ids, groups, strict=True)))
    assert list(read_groups(csv_path, ids[:5])) == ["0", "0", "0", "0", "1"]
    with pytest.raises(ValueError, match="no group for ids \\[99\\]"):
        read_groups(csv_path, [99])
    # the seed's block folds: fold 0 tests on the last 20% of the natural order
    cf = contiguous_folds(np.arange(3799), k=5)
    assert cf[0][1][0] == int(0.8 * 3799) and cf[0][1].size == 760 and cf[4][1][0] == 0
    assert np.array_equal(kfold_splits(np.arange(10), k=5, contiguous=True)[0][1], [8, 9])


def test_read_splits_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="s.json: not a JSON split file"):
        read_splits(p)
    p.write_text(json.dumps({"format": "landslide-splits/1", "folds": [{"train": [1, 2], "test": [2]}]}))
    with pytest.raises(ValueError, match="fold 0 has ids in both"):
        read_splits(p)
    with pytest.raises(FileNotFoundError):
        read_splits(tmp_path / "none.json")
