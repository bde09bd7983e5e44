"""L4S reading/writing, layouts, pairing by id and bad-input errors (files made by the tests)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from imagery.data import (
    L4SDataset,
    PatchSet,
    detect_layout,
    load_patches,
    read_image,
    read_mask,
    write_image,
    write_mask,
)
from imagery.data.bands import BANDS, L4S_MEAN, L4S_STD, band_index


def _patch(rng: np.random.Generator, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    img = rng.uniform(0.1, 2.0, size=(14, size, size)).astype(np.float32)
    mask = (rng.random((size, size)) < 0.1).astype(np.uint8)
    return img, mask


def _write_plain(root: Path, ids: list[int], seed: int = 0, dtype: type = np.float64) -> dict[int, tuple]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in ids:
        img, mask = _patch(rng)
        write_image(root / "img" / f"image_{i}.h5", img, dtype=dtype)
        write_mask(root / "mask" / f"mask_{i}.h5", mask)
        out[i] = (img, mask)
    return out


def test_band_index_names_and_aliases() -> None:
    assert BANDS[band_index("NIR")] == "B8"
    assert BANDS[band_index("red")] == "B4"
    assert BANDS[band_index("green")] == "B3"
    assert BANDS[band_index("Blue")] == "B2"
    assert BANDS[band_index("SWIR1")] == "B11"
    assert BANDS[band_index("swir2")] == "B12"
    assert band_index("dem") == 13 and band_index("slope") == 12 and band_index("b1") == 0
    with pytest.raises(ValueError, match="unknown band 'B13'"):
        band_index("B13")
    assert L4S_MEAN.shape == L4S_STD.shape == (14,) and L4S_MEAN.dtype == np.float32
    assert np.all(L4S_STD > 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_roundtrip_hwc_on_disk(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    img, mask = _patch(rng)
    write_image(tmp_path / "image_5.h5", img, dtype=dtype)
    write_mask(tmp_path / "mask_5.h5", mask)
    with h5py.File(tmp_path / "image_5.h5") as fh:
        assert fh["img"].shape == (16, 16, 14) and fh["img"].dtype == dtype
        np.testing.assert_allclose(fh["img"][:, :, 3], img[3], rtol=1e-3)
    back = read_image(tmp_path / "image_5.h5")
    assert back.shape == (14, 16, 16) and back.dtype == np.float32
    np.testing.assert_allclose(back, img, rtol=1e-3)
    np.testing.assert_array_equal(read_mask(tmp_path / "mask_5.h5"), mask)


def test_pairing_by_id_not_sort_order(tmp_path: Path) -> None:
    written = _write_plain(tmp_path, [10, 2, 1])  # "image_10" sorts before "image_2" as text
    ps = load_patches(tmp_path)
    assert list(ps.ids) == [1, 2, 10]
    for k, pid in enumerate(ps.ids):
        np.testing.assert_allclose(ps.images[k], written[int(pid)][0], rtol=1e-6)
        np.testing.assert_array_equal(ps.masks[k], written[int(pid)][1])
    assert ps.paths[2].endswith("image_10.h5")
    sub = ps.subset([2, 0])
    assert list(sub.ids) == [10, 1] and isinstance(sub, PatchSet) and len(sub) == 2
    assert list(ps.select_ids([10]).ids) == [10]


def test_layouts_official_hf_plain(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    off, hf = tmp_path / "off", tmp_path / "hf"
    for i in (1, 2):
        img, mask = _patch(rng)
        write_image(off / "TrainData" / "img" / f"image_{i}.h5", img)
        write_mask(off / "TrainData" / "mask" / f"mask_{i}.h5", mask)
        write_image(hf / "images" / "validation" / f"image_{i + 5}.h5", img)
        write_mask(hf / "masks" / "validation" / f"mask_{i + 5}.h5", mask)
    write_image(off / "ValidData" / "img" / "image_7.h5", img)  # unlabelled split
    assert detect_layout(off) == "official" and detect_layout(hf) == "hf"
    assert list(load_patches(off, "train").ids) == [1, 2]
    val = load_patches(off, "val")
    assert list(val.ids) == [7] and val.masks is None
    assert list(load_patches(hf, "val").ids) == [6, 7]
    with pytest.raises(FileNotFoundError, match=r"ValidData.mask: no mask_N\.h5"):
        load_patches(off, "val", require_masks=True)


def test_torch_dataset_items(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    written = _write_plain(tmp_path, [3, 4])
    ds = L4SDataset(tmp_path, split="train")
    assert len(ds) == 2
    s = ds[1]
    assert s["id"] == 4 and s["image"].dtype == torch.float32 and s["image"].shape == (14, 16, 16)
    assert s["mask"].dtype == torch.int64
    np.testing.assert_array_equal(s["mask"].numpy(), written[4][1])
    fig = ds.plot(0)
    assert len(fig.axes) >= 2


def _err(call, match: str) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    assert re.search(match, msg), msg
    return msg


def test_bad_inputs_name_file_and_expectation(tmp_path: Path) -> None:
    # missing mask for an image
    d = tmp_path / "missing"
    _write_plain(d, [1, 2])
    (d / "mask" / "mask_2.h5").unlink()
    _err(lambda: load_patches(d), r"missing 1 mask.*mask_2\.h5")
    # empty folder
    e = tmp_path / "empty"
    (e / "img").mkdir(parents=True)
    _err(lambda: load_patches(e), r"no image_N\.h5 files")
    _err(lambda: load_patches(tmp_path / "nowhere"), "not found")
    # wrong band count
    p = tmp_path / "x" / "image_1.h5"
    p.parent.mkdir()
    with h5py.File(p, "w") as fh:
        fh["img"] = np.zeros((16, 16, 13))
    _err(lambda: read_image(p), r"image_1\.h5.*\(16, 16, 13\).*expected \(H, W, 14\)")
    # wrong dataset key
    q = tmp_path / "x" / "image_2.h5"
    with h5py.File(q, "w") as fh:
        fh["image"] = np.zeros((16, 16, 14))
    _err(lambda: read_image(q), r"image_2\.h5: no dataset 'img'")
    # zero-byte, not HDF5, truncated
    z = tmp_path / "x" / "image_3.h5"
    z.write_bytes(b"")
    _err(lambda: read_image(z), r"image_3\.h5: zero-byte")
    t = tmp_path / "x" / "image_4.h5"
    t.write_text("hello, not hdf5")
    _err(lambda: read_image(t), r"image_4\.h5: not an HDF5")
    full = tmp_path / "x" / "full.h5"
    write_image(full, np.ones((14, 64, 64)), dtype=np.float64)
    trunc = tmp_path / "x" / "image_5.h5"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _err(lambda: read_image(trunc), r"image_5\.h5.*(truncated|corrupt|not an HDF5)")


def test_mask_values(tmp_path: Path) -> None:
    p = tmp_path / "mask_1.h5"
    with h5py.File(p, "w") as fh:
        fh["mask"] = np.array([[0, 255], [1, 0]], dtype=np.uint8)
    with pytest.warns(UserWarning, match="255"):
        m = read_mask(p)
    np.testing.assert_array_equal(m, [[0, 1], [1, 0]])
    with h5py.File(p, "w") as fh:
        fh["mask"] = np.array([[0, 2], [1, 0]], dtype=np.uint8)
    _err(lambda: read_mask(p), r"mask_1\.h5: mask values \[2\].*expected only 0/1")


def test_all_bad_files_reported_together(tmp_path: Path) -> None:
    _write_plain(tmp_path, [1, 2, 3])
    (tmp_path / "img" / "image_1.h5").write_bytes(b"")
    (tmp_path / "img" / "image_3.h5").write_text("junk")
    msg = _err(lambda: load_patches(tmp_path), r"2 bad file")
    assert "image_1.h5" in msg and "image_3.h5" in msg
