"""Reproducible patch-id splits: seeded hold-out, k-fold (optionally grouped), the seed's
contiguous-block folds over the natural order of the patch file names, and JSON split files.

Split file format (JSON)::

    {"format": "landslide-splits/1", "folds": [{"train": [ids...], "test": [ids...]}, ...]}

A hold-out split is a file with one fold (``test`` = the validation ids).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, train_test_split

from common.atomic import atomic_write
from common.cli import UserError

FORMAT = "landslide-splits/1"
Split = tuple[np.ndarray, np.ndarray]


def _ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"split ids must be a non-empty 1-D list of integers, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"split ids must be integers, got dtype {arr.dtype}")
    if np.unique(arr).size != arr.size:
        raise ValueError("split ids contain duplicates; expected unique patch ids")
    return arr.astype(np.int64)


def holdout_split(
    ids: Sequence[int] | np.ndarray,
    val_fraction: float = 0.2,
    seed: int = 0,
    stratify: Sequence[int] | np.ndarray | None = None,
) -> Split:
    """Seeded random ``(train_ids, val_ids)``, each sorted; ``stratify`` (e.g. patch labels) optional."""
    arr = _ids(ids)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    tr, va = train_test_split(arr, test_size=val_fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(va)


def contiguous_folds(ids: Sequence[int] | np.ndarray, k: int = 5) -> list[Split]:
    """The seed's folds: ids in increasing (natural) order, fold i (0-based) tests on the block
    ``[int((k-1-i)/k*N), int((k-i)/k*N))`` (fold 0 = the last 20% for k = 5)."""
    arr = np.sort(_ids(ids))
    n = arr.size
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of ids ({n}), got {k}")
    out = []
    for i in range(k):
        lo, hi = int((k - 1 - i) / k * n), int((k - i) / k * n)
        test = arr[lo:hi]
        out.append((np.concatenate([arr[:lo], arr[hi:]]), test))
    return out


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key of the natural order (``natsort``): digit runs compare as integers, ``image_2`` < ``image_10``."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def natural_order(names: Sequence[str], what: str = "patch") -> np.ndarray:
    """Positions that put ``names`` (file names, no folders) in natural order, as the seed study sorted its files.

    The order must be the one the study saw: one numbered sequence. :class:`common.cli.UserError` (one line,
    saying what was found) when a name repeats (e.g. tiles cut from one chip), a name holds no number, or the
    names follow more than one pattern (``image_<N>.h5`` beside ``img_<N>.h5``).
    """
    names = [str(n) for n in names]
    if not names:
        raise UserError(f"no {what} names to sort")
    repeated = [n for n, c in Counter(names).items() if c > 1]
    if repeated:
        raise UserError(
            f"{what} names do not sort naturally: {len(repeated)} name(s) repeat, e.g. {repeated[0]!r} "
            f"(tiles cut from one file?); the study's folds need one file per patch, e.g. image_<N>.h5"
        )
    patterns = Counter(_DIGITS.sub("<N>", Path(n).stem) + Path(n).suffix for n in names)
    bad = [p for p in patterns if "<N>" not in p]  # no number in the name itself (the suffix does not count)
    if bad or len(patterns) > 1:
        found = ", ".join(f"{p} ({c})" for p, c in patterns.most_common(4))
        raise UserError(
            f"{what} names do not sort naturally into one numbered sequence: found {found}"
            f"{' ...' if len(patterns) > 4 else ''}; the study natural-sorts names like image_<N>.h5"
        )
    return np.array(sorted(range(len(names)), key=lambda i: natural_key(names[i])), dtype=np.int64)


def kfold_splits(
    ids: Sequence[int] | np.ndarray,
    k: int = 5,
    seed: int = 0,
    groups: Sequence[object] | np.ndarray | None = None,
    contiguous: bool = False,
) -> list[Split]:
    """``k`` seeded folds ``[(train_ids, test_ids), ...]`` (each sorted) covering every id once as test.

    ``groups`` (same length as ``ids``) keeps each group in one fold (sklearn ``GroupKFold``,
    shuffled by ``seed``); ``contiguous=True`` gives the seed's block folds (:func:`contiguous_folds`).
    """
    arr = _ids(ids)
    if contiguous:
        return contiguous_folds(arr, k)
    if not 2 <= k <= arr.size:
        raise ValueError(f"k must be between 2 and the number of ids ({arr.size}), got {k}")
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != arr.shape:
            raise ValueError(f"groups must have one entry per id ({arr.size}), got {g.shape[0] if g.ndim else 0}")
        if np.unique(g).size < k:
            raise ValueError(f"{np.unique(g).size} groups cannot make {k} grouped folds; expected at least {k}")
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        it = splitter.split(arr, groups=g)
    else:
        it = KFold(n_splits=k, shuffle=True, random_state=seed).split(arr)
    return [(np.sort(arr[tr]), np.sort(arr[te])) for tr, te in it]


def write_splits(path: str | os.PathLike[str], splits: Sequence[Split], meta: dict | None = None) -> Path:
    """Write ``splits`` as a JSON split file (atomically); ``meta`` (e.g. seed, k) is stored alongside."""
    folds = []
    for i, (tr, te) in enumerate(splits):
        tr_l, te_l = [int(v) for v in tr], [int(v) for v in te]
        if set(tr_l) & set(te_l):
            raise ValueError(f"fold {i}: train and test ids overlap; expected disjoint sets")
        folds.append({"train": tr_l, "test": te_l})
    data = {"format": FORMAT, "meta": dict(meta or {}), "folds": folds}
    with atomic_write(path) as fh:
        json.dump(data, fh)
    return Path(path)


def read_splits(path: str | os.PathLike[str]) -> list[Split]:
    """Read a JSON split file; ``ValueError`` naming the file when it is malformed."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: split file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a JSON split file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("folds"), list):
        raise ValueError(f"{p}: expected a split file with format {FORMAT!r} and a 'folds' list")
    out = []
    for i, fold in enumerate(data["folds"]):
        try:
            tr = np.asarray(fold["train"], dtype=np.int64)
            te = np.asarray(fold["test"], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{p}: fold {i} needs integer 'train' and 'test' id lists") from None
        if np.intersect1d(tr, te).size:
            raise ValueError(f"{p}: fold {i} has ids in both train and test")
        out.append((tr, te))
    return out


def read_groups(path: str | os.PathLike[str], ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Group label per id from a CSV with columns ``id,group`` (e.g. a geographic tile id).

    Returns an array aligned with ``ids``; ``ValueError`` naming ids without a group.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: group file not found")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"id", "group"} <= set(reader.fieldnames):
            raise ValueError(f"{p}: expected CSV columns 'id' and 'group', got {reader.fieldnames}")
        mapping: dict[int, str] = {}
        for row in reader:
            try:
                mapping[int(row["id"])] = row["group"]
            except ValueError:
                raise ValueError(f"{p}: id {row['id']!r} is not an integer") from None
    missing = [int(i) for i in ids if int(i) not in mapping]
    if missing:
        raise ValueError(f"{p}: no group for ids {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return np.array([mapping[int(i)] for i in ids])
