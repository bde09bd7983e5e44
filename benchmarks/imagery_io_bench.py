"""Patches/s reading L4S patches through per-file HDF5 opens vs through the memory-mapped cache.

Writes ``--n`` synthetic patches of the real size (128x128x14 float64 images + uint8 masks,
the official file format) into ``--workdir``, builds the cache once, then times one full pass
("epoch") over all patches each way, in a shuffled order, delivering float32 ``(B, 14, 128, 128)``
batches of ``--batch`` patches plus masks:

* ``hdf5``: open and read ``image_N.h5`` + ``mask_N.h5`` per patch (as the official baseline does
  every epoch);
* ``cache``: fancy-index the memory-mapped ``train_images.npy`` / ``train_masks.npy``.

To save time, ``--distinct`` distinct synthetic patches are generated and written cyclically
(the bytes per file and the file count are those of the real training set).

    python benchmarks/imagery_io_bench.py --n 3799 --workdir /tmp/l4s_bench
"""

from __future__ import annotations

import argparse
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from imagery.data import read_image, read_mask, write_image, write_mask
from imagery.data.cache import build_cache, open_cache
from imagery.data.synthetic import synth_patch


def write_files(root: Path, n: int, distinct: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = [synth_patch(rng, has_landslide=i % 5 < 3) for i in range(distinct)]
    for i in range(n):
        img, mask = pool[i % distinct]
        write_image(root / "img" / f"image_{i + 1}.h5", img, dtype=np.float64)
        write_mask(root / "mask" / f"mask_{i + 1}.h5", mask)


def epoch_hdf5(root: Path, order: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        ids = order[start : start + batch] + 1
        x = np.stack([read_image(root / "img" / f"image_{i}.h5") for i in ids])
        y = np.stack([read_mask(root / "mask" / f"mask_{i}.h5") for i in ids])
        assert x.shape[1] == 14 and y.shape[0] == x.shape[0]
    return time.perf_counter() - t0


def epoch_cache(cache: Path, order: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    ps = open_cache(cache, "train")
    for start in range(0, len(order), batch):
        idx = np.sort(order[start : start + batch])
        x = np.asarray(ps.images[idx], dtype=np.float32)
        y = np.asarray(ps.masks[idx])
        assert x.shape[1] == 14 and y.shape[0] == x.shape[0]
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3799, help="number of patches (L4S TrainData: 3799)")
    p.add_argument("--batch", type=int, default=12, help="batch size (the seed: 12)")
    p.add_argument("--distinct", type=int, default=64, help="distinct synthetic patches written cyclically")
    p.add_argument("--workdir", default="/tmp/l4s_io_bench", help="scratch folder (removed unless --keep)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs per method (best is reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args()

    work = Path(args.workdir)
    data, cache = work / "data", work / "cache"
    if work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    write_files(data, args.n, args.distinct, args.seed)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_cache(data, cache)
    t_build = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    h5 = min(epoch_hdf5(data, rng.permutation(args.n), args.batch) for _ in range(args.repeats))
    mm = min(epoch_cache(cache, rng.permutation(args.n), args.batch) for _ in range(args.repeats))
    size_gb = sum(f.stat().st_size for f in data.rglob("*.h5")) / 1e9
    cache_gb = sum(f.stat().st_size for f in cache.glob("*.npy")) / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}")
    print(
        f"N={args.n} patches, batch {args.batch}, HDF5 files {size_gb:.2f} GB (float64), cache {cache_gb:.2f} GB (float32)"
    )
    print(f"write files {t_write:.1f}s, build cache (read + check + write + fingerprint) {t_build:.1f}s")
    print("| method | seconds/epoch | patches/s |")
    print("|---|---|---|")
    print(f"| per-file HDF5 | {h5:.2f} | {args.n / h5:.0f} |")
    print(f"| memmap cache | {mm:.2f} | {args.n / mm:.0f} |")
    print(f"ratio cache/HDF5: {h5 / mm:.1f}x")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
