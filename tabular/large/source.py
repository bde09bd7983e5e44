"""Cell tables too large for pandas: Parquet datasets and Arrow IPC files read in column-selected batches.

A *table source* is one of

* a Parquet dataset: a folder of ``*.parquet`` part files, also hive-partitioned
  (``partition=1/part-0.parquet``; the partition keys become columns, never features);
* Arrow IPC (Feather v2) files: one ``.arrow`` / ``.feather`` / ``.ipc`` file, or a folder of them
  (the study's layout ``pos/carinthia_slides.arrow`` + ``neg/partition=1..9/part-0.arrow`` works);
* one ``.parquet`` file (or a ``.csv`` file, typed by Arrow's CSV reader).

:class:`TableSource` checks that every part has the same columns and types (a part that differs is
named with the column), reads only the columns asked for, in batches of at most ``batch_rows`` rows,
in a fixed row order (parts in natural path order, rows in file order), and converts features to
float32 (:class:`FeatureEncoder`: categorical values become level codes, unseen levels NaN).

Tables written by ``pipelines.build_table`` and ``pipelines.make_table`` carry :data:`META_KEY` in
their Parquet schema metadata (JSON): the raster ``grid`` (CRS, affine transform, width, height) of
the cells, the ``target`` and ``coords`` column names, the ``categorical`` features and the
``sampling`` that produced the rows (``negative_rate``: the share of the area's negative cells that
were kept, 1.0 for all cells). :class:`TableMeta` reads it back.

:class:`TableSequence` is a ``lightgbm.Sequence`` over the encoded features, so LightGBM bins the
table in two streaming passes (a row sample for the bin bounds, then every row pushed into the
binned matrix) without the raw table ever being in memory.

:func:`atomic_dataset_dir` writes a dataset folder under a temporary name and renames it at the end;
:class:`PartWriter` writes record batches into its Parquet part files (the one part writer of the cell tables
of ``tabular.build`` and ``tabular.carinthia``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.lib
import pyarrow.parquet as pq

from common.atomic import atomic_dir
from common.cli import InputNotFoundError, UserError

META_KEY = b"landslide_table"
META_VERSION = 1
PARQUET_SUFFIXES = (".parquet", ".pq")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
DEFAULT_BATCH_ROWS = 262_144


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_dataset_path(path: str | os.PathLike[str]) -> bool:
    """True for what :class:`TableSource` reads and ``tabular.data.load_table`` does not: a folder or an IPC file."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in IPC_SUFFIXES


@dataclass(frozen=True)
class TableMeta:
    """What a table says about itself (:data:`META_KEY`); every field optional.

    ``grid``: ``{"crs", "transform": [a, b, c, d, e, f], "width", "height"}`` of the raster the cells
    come from; ``target`` and ``coords`` (x, y column names, cell centres in the grid CRS);
    ``categorical`` feature names; ``sampling``: ``{"mode", "negative_rate", ...}``.
    """

    grid: dict[str, Any] | None = None
    target: str | None = None
    coords: tuple[str, str] | None = None
    categorical: tuple[str, ...] = ()
    sampling: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def negative_rate(self) -> float:
        """Share of the area's negative cells kept in the table (1.0 when every cell is there)."""
        return float(self.sampling.get("negative_rate", 1.0))

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> TableMeta:
        meta = schema.metadata or {}
        if META_KEY not in meta:
            return cls()
        try:
            raw = json.loads(meta[META_KEY])
        except (ValueError, TypeError):
            return cls()
        coords = raw.get("coords")
        return cls(
            grid=raw.get("grid"),
            target=raw.get("target"),
            coords=tuple(coords) if coords else None,
            categorical=tuple(raw.get("categorical") or ()),
            sampling=dict(raw.get("sampling") or {}),
            raw=raw,
        )

    def grid_object(self) -> Any:
        """The cells' :class:`common.geo.Grid`, or None when the table carries none."""
        if not self.grid:
            return None
        from common.geo import Grid  # noqa: PLC0415 - rasterio/pyproj load only when a grid is used

        g = self.grid
        return Grid(g["crs"], tuple(g["transform"]), int(g["width"]), int(g["height"]))


def table_metadata(
    *,
    grid: Any = None,
    target: str,
    coords: tuple[str, str] | None = ("x", "y"),
    categorical: Sequence[str] = (),
    sampling: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[bytes, bytes]:
    """Schema metadata for a table this project writes (see :class:`TableMeta`)."""
    raw: dict[str, Any] = {"version": META_VERSION, "target": target, "coords": list(coords) if coords else None}
    if grid is not None:
        raw["grid"] = {
            "crs": grid.crs,
            "transform": list(grid.transform)[:6],
            "width": grid.width,
            "height": grid.height,
        }
    raw["categorical"] = list(categorical)
    raw["sampling"] = dict(sampling or {"mode": "all", "negative_rate": 1.0})
    raw.update(extra)
    return {META_KEY: json.dumps(raw).encode("utf-8")}


def _sampling_text(sampling: dict[str, Any]) -> str:
    """A table part's sampling metadata in a few words, for an error message."""
    if not sampling:
        return "no sampling metadata"
    words = [f"{k} {sampling[k]}" for k in ("mode", "negatives_per_positive", "negative_rate", "seed") if k in sampling]
    return ", ".join(words)


class TableSource:
    """A Parquet dataset, Arrow IPC file(s) or one Parquet file, read in column-selected batches.

    Raises :class:`common.cli.UserError` (one line) for a missing path, a folder without table
    files, a folder mixing Parquet and IPC files, unreadable parts and parts that disagree on the
    schema (naming the part and the column).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        p = self.path
        if not p.exists():
            raise InputNotFoundError(f"data not found: {p} (expected a Parquet dataset folder or Arrow IPC file)")
        if p.is_dir():
            files = sorted(
                (
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in PARQUET_SUFFIXES + IPC_SUFFIXES
                    and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
                ),
                key=_natural_key,
            )
            kinds = {"parquet" if f.suffix.lower() in PARQUET_SUFFIXES else "ipc" for f in files}
            if not files:
                raise UserError(f"{p}: no .parquet, .arrow or .feather files in this folder (expected a table dataset)")
            if len(kinds) > 1:
                raise UserError(f"{p}: folder mixes Parquet and Arrow IPC files (expected one format)")
            self.format = kinds.pop()
        else:
            suffix = p.suffix.lower()
            if suffix in PARQUET_SUFFIXES:
                self.format = "parquet"
            elif suffix in IPC_SUFFIXES:
                self.format = "ipc"
            elif suffix == ".csv":
                self.format = "csv"
            else:
                raise UserError(
                    f"{p}: unsupported table format {suffix or '(no suffix)'!r} (expected .parquet or .arrow)"
                )
            files = [p]
        self.files = files
        try:
            kwargs: dict[str, Any] = {"format": self.format}
            if p.is_dir():
                kwargs.update(partitioning="hive", partition_base_dir=str(p))
            self.dataset = pads.dataset([str(f) for f in files], **kwargs)
            self.fragments = list(self.dataset.get_fragments())
            self._check_schemas()
        except (pyarrow.lib.ArrowException, OSError) as exc:
            raise UserError(f"{p}: unreadable table ({' '.join(str(exc).split())[:300]})") from None
        self.partition_columns = tuple(
            n for n in self.dataset.schema.names if n not in self.fragments[0].physical_schema.names
        )
        self.schema = self.fragments[0].physical_schema
        self.meta = TableMeta.from_schema(self.schema)
        self._num_rows: int | None = None

    def _check_schemas(self) -> None:
        first = self.fragments[0]
        ref = first.physical_schema
        ref_types = {f.name: f.type for f in ref}
        ref_sampling = TableMeta.from_schema(ref).sampling
        for frag in self.fragments[1:]:
            sch = frag.physical_schema
            sampling = TableMeta.from_schema(sch).sampling
            if sampling != ref_sampling:
                raise UserError(
                    f"{self.path}: part {frag.path} was sampled differently ({_sampling_text(sampling)}) from "
                    f"part {first.path} ({_sampling_text(ref_sampling)}); expected one table built in one run "
                    "(its rate corrects the probabilities: build the parts together or keep them in separate folders)"
                )
            types = {f.name: f.type for f in sch}
            for name, t in ref_types.items():
                if name not in types:
                    raise UserError(
                        f"{self.path}: part {frag.path} has no column {name!r} (present in {first.path}); "
                        "expected every part to have the same columns"
                    )
                if types[name] != t and not (pa.types.is_dictionary(t) and pa.types.is_dictionary(types[name])):
                    raise UserError(
                        f"{self.path}: part {frag.path} column {name!r} is {types[name]}, "
                        f"but {t} in {first.path}; expected the same type in every part"
                    )
            extra = [n for n in types if n not in ref_types]
            if extra:
                raise UserError(
                    f"{self.path}: part {frag.path} has column {extra[0]!r} that {first.path} lacks; "
                    "expected every part to have the same columns"
                )

    # -- description ---------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Data columns (partition keys excluded), in file order."""
        return list(self.schema.names)

    @property
    def num_rows(self) -> int:
        """Row count (from the file footers)."""
        if self._num_rows is None:
            self._num_rows = int(sum(f.count_rows() for f in self.fragments))
        return self._num_rows

    def coord_columns(self) -> tuple[str, str] | None:
        """The cell-centre columns: the table's own (:attr:`TableMeta.coords`), else ``x``, ``y``; None when absent."""
        for pair in (self.meta.coords, ("x", "y")):
            if pair and all(c in self.schema.names for c in pair):
                return (pair[0], pair[1])
        return None

    def field(self, name: str) -> pa.Field:
        return self.schema.field(name)

    def require(self, names: Sequence[str], what: str = "column") -> None:
        missing = [n for n in names if n not in self.schema.names]
        if missing:
            raise UserError(f"{self.path}: {what} {missing} not found (columns: {self.columns[:25]})")

    def _value_type(self, name: str) -> pa.DataType:
        """The column's type (a dictionary column's value type)."""
        t = self.schema.field(name).type
        return t.value_type if pa.types.is_dictionary(t) else t

    def is_numeric(self, name: str) -> bool:
        t = self._value_type(name)
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)

    def is_textual(self, name: str) -> bool:
        t = self._value_type(name)
        return pa.types.is_string(t) or pa.types.is_large_string(t)

    def is_dictionary(self, name: str) -> bool:
        return pa.types.is_dictionary(self.schema.field(name).type)

    # -- reading -------------------------------------------------------------------------------
    def batches(
        self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS, *, prefetch: int = 0
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of ``columns`` (at most ``batch_rows`` rows each) in the table's row order.

        ``prefetch`` > 0 reads up to that many batches ahead in a background thread (Arrow decodes
        without the GIL), so reading overlaps the caller's work on the previous batch.
        """
        cols = list(dict.fromkeys(columns))
        self.require(cols)
        if prefetch > 0:
            yield from prefetched(self._batches(cols, batch_rows), prefetch)
            return
        yield from self._batches(cols, batch_rows)

    def _batches(self, cols: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        # Parquet is scanned one row group at a time, without read-ahead or pre-buffering: a scan of a
        # whole part decodes its row groups ahead (Arrow's live memory peaked at 650-885 MB for 2M-row
        # parts of 43 float64 columns, 1.9 GB with the default read-ahead); per row group it stays
        # under ~170 MB whatever the part size, and reads no slower
        kwargs: dict[str, Any] = {"batch_readahead": 0, "fragment_readahead": 0}
        if self.format == "parquet":
            kwargs["fragment_scan_options"] = pads.ParquetFragmentScanOptions(pre_buffer=False)
        try:
            for frag in self.fragments:
                pieces = frag.split_by_row_group() if self.format == "parquet" else [frag]
                for piece in pieces:
                    for batch in piece.to_batches(columns=cols, batch_size=int(batch_rows), use_threads=True, **kwargs):
                        if batch.num_rows:
                            yield batch
        except (pyarrow.lib.ArrowException, OSError) as exc:
            raise UserError(f"{self.path}: unreadable table ({' '.join(str(exc).split())[:300]})") from None

    def read_columns(
        self, columns: Sequence[str], dtype: Any = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> dict[str, np.ndarray]:
        """Whole columns as NumPy arrays (``dtype`` or their own; nulls NaN in float), batch by batch."""
        n = self.num_rows
        out: dict[str, np.ndarray] = {}
        pos = 0
        for batch in self.batches(columns, batch_rows):
            m = batch.num_rows
            for name in columns:
                arr = column_numpy(batch.column(batch.schema.get_field_index(name)))
                if name not in out:
                    out[name] = np.empty(n, dtype=dtype or arr.dtype)
                out[name][pos : pos + m] = arr
            pos += m
        if pos != n:
            raise UserError(f"{self.path}: read {pos} rows, expected {n} from the file footers")
        for name in columns:
            out.setdefault(name, np.empty(0, dtype=dtype or np.float64))
        return out


_DONE = object()


def prefetched(it: Iterator[Any], depth: int) -> Iterator[Any]:
    """Items of ``it`` produced by a background thread at most ``depth`` ahead; its errors re-raised here."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def column_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as NumPy: dictionaries decoded, booleans 0/1, nulls NaN (as float64 for ints)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    if col.null_count and not pa.types.is_floating(col.type):
        col = pc.cast(col, pa.float64())
    return col.to_numpy(zero_copy_only=False)


def _level_string(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


_ENCODE_BLOCK_ROWS = 4096


class FeatureEncoder:
    """Record batches to a float32 matrix ``(rows, len(features))`` in ``features`` order.

    Categorical columns (``levels``: ``{column: [level, ...]}``, level strings as
    ``LandslideClassifier.categorical_levels_`` stores them) become the level's index; a value not
    among the levels, like a missing one, becomes NaN. Other columns are cast to float32 (nulls NaN).
    """

    def __init__(self, features: Sequence[str], levels: dict[str, list[str]] | None = None) -> None:
        self.features = list(features)
        self.levels = dict(levels or {})
        self._numeric_levels: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        for col, lv in self.levels.items():
            try:
                vals = np.asarray([float(v) for v in lv], dtype=np.float64)
                order = np.argsort(vals, kind="stable")
                self._numeric_levels[col] = (vals[order], order.astype(np.float32))
            except ValueError:
                self._numeric_levels[col] = None
        self.unseen: dict[str, int] = {}

    def encode(self, batch: pa.RecordBatch, dtype: Any = np.float32) -> np.ndarray:
        """``(rows, features)`` matrix of ``dtype`` (float32; float64 for the compiled trees, saving a copy)."""
        names = batch.schema.names
        cols: list[np.ndarray] = []
        for name in self.features:
            if name not in names:
                raise UserError(f"input is missing feature column {name!r}")
            col = batch.column(names.index(name))
            cols.append(self._codes(name, col) if name in self.levels else column_numpy(col))
        n = batch.num_rows
        out = np.empty((n, len(cols)), dtype=dtype)
        # filled a block of rows at a time: a whole column written into the row-major matrix at once
        # touches a cache line per value, for every column (7x slower on 262,144 x 43 float64)
        for a in range(0, n, _ENCODE_BLOCK_ROWS):
            b = min(a + _ENCODE_BLOCK_ROWS, n)
            for j, values in enumerate(cols):
                out[a:b, j] = values[a:b]
        return out

    def _codes(self, name: str, col: pa.Array) -> np.ndarray:
        values = column_numpy(col)
        numeric = self._numeric_levels.get(name)
        if numeric is not None and values.dtype != object:
            sorted_vals, codes_by_rank = numeric
            v = values.astype(np.float64, copy=False)
            if len(sorted_vals) == 0:
                return np.full(len(v), np.nan, dtype=np.float32)
            pos = np.clip(np.searchsorted(sorted_vals, v), 0, len(sorted_vals) - 1)
            hit = sorted_vals[pos] == v
            codes = np.where(hit, codes_by_rank[pos], np.nan).astype(np.float32)
            unseen = int((~hit & ~np.isnan(v)).sum())
        else:
            strs = pd.Series(values, dtype=object).map(lambda x: None if x is None else _level_string(x))
            cat = pd.Categorical(strs, categories=self.levels[name])
            codes = cat.codes.astype(np.float32)
            unseen = int(((codes < 0) & strs.notna().to_numpy()).sum())
            codes[codes < 0] = np.nan
        if unseen:
            self.unseen[name] = self.unseen.get(name, 0) + unseen
        return codes


def discover_levels(source: TableSource, columns: Sequence[str], limit: int = 10_000) -> dict[str, list[str]]:
    """Sorted level strings of each categorical column (one pass over those columns only).

    Raises :class:`UserError` for a column with more than ``limit`` distinct values.
    """
    found: dict[str, set[Any]] = {c: set() for c in columns}
    if not columns:
        return {}
    for batch in source.batches(columns):
        for name in columns:
            col = batch.column(batch.schema.get_field_index(name))
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            uniq = pc.unique(col).drop_null().to_pylist()
            found[name].update(uniq)
            if len(found[name]) > limit:
                raise UserError(
                    f"{source.path}: categorical column {name!r} has more than {limit} distinct values "
                    "(expected class codes; treat it as numeric by leaving it out of --categorical)"
                )
    out: dict[str, list[str]] = {}
    for name, vals in found.items():
        if all(isinstance(v, int | float | np.integer | np.floating) for v in vals):
            out[name] = [_level_string(v) for v in sorted(vals)]
        else:
            out[name] = sorted({_level_string(v) for v in vals})
    return out


class TableSequence(lgb.Sequence):
    """A ``lightgbm.Sequence`` of encoded feature rows, read sequentially from a :class:`TableSource`.

    LightGBM asks for rows in increasing order (its bin-bound sample, then consecutive slices of
    ``batch_size`` rows), so a cursor over the batches serves every request; a request behind the
    cursor starts a new pass. ``rows`` (sorted row indices) restricts the sequence to those rows.
    """

    def __init__(
        self, source: TableSource, encoder: FeatureEncoder, batch_rows: int = DEFAULT_BATCH_ROWS, rows: Any = None
    ) -> None:
        self.source = source
        self.encoder = encoder
        self.batch_size = int(batch_rows)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._n = source.num_rows if self.rows is None else len(self.rows)
        self._iter: Iterator[tuple[int, np.ndarray]] | None = None
        self._block: tuple[int, np.ndarray] | None = None
        self.passes = 0

    def __len__(self) -> int:
        return self._n

    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        self.passes += 1
        start = 0
        raw = 0
        for batch in self.source.batches(self.encoder.features, self.batch_size, prefetch=2):
            m = batch.num_rows
            if self.rows is None:
                yield start, self.encoder.encode(batch)
                start += m
            else:
                lo, hi = np.searchsorted(self.rows, [raw, raw + m])
                if hi > lo:
                    sel = self.rows[lo:hi] - raw
                    yield start, self.encoder.encode(batch.take(pa.array(sel)))
                    start += int(hi - lo)
            raw += m

    def _range(self, a: int, b: int) -> np.ndarray:
        if self._block is None or a < self._block[0]:
            self._iter = self._blocks()
            self._block = next(self._iter)
        pieces = []
        while True:
            s, mat = self._block
            e = s + len(mat)
            if a < e and s < b:
                pieces.append(mat[max(a, s) - s : min(b, e) - s])
            if e >= b:
                break
            assert self._iter is not None
            self._block = next(self._iter)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def __getitem__(self, idx: Any) -> np.ndarray:
        if isinstance(idx, int | np.integer):
            i = int(idx)
            return self._range(i, i + 1)[0].astype(np.float64)  # LightGBM's bin sample must be float64
        if isinstance(idx, slice):
            start, stop, _ = idx.indices(self._n)
            return self._range(start, stop)
        raise TypeError(f"TableSequence index must be an int or a slice, got {type(idx).__name__}")


def atomic_dataset_dir(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[Path]:
    """A dataset folder written under a temporary name that replaces ``path`` whole when complete
    (:func:`common.atomic.atomic_dir` with ``replace``; old part files never mix with new ones)."""
    return atomic_dir(path, replace=True)


class PartWriter:
    """Record batches into the Parquet part files of a dataset folder ``folder`` (a context manager; every open
    file is closed on exit, also on error).

    Layouts: flat (``part-00000.parquet``, ``part-00001.parquet``, ... numbered from 0) or, with ``hive``, one
    file per partition (``partition=1/part-0.parquet``, ``partition=2/...``, numbered from 1). A new part starts
    when the current one holds ``rows_per_part`` rows or more; with ``strict`` already when the next batch would
    take it past ``rows_per_part`` (a part then exceeds it only with a single larger batch). ``row_group_size``
    ``"batch"`` writes each batch as one row group; ``None`` leaves it to pyarrow's default.
    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        *,
        rows_per_part: int,
        compression: str = "zstd",
        hive: bool = False,
        strict: bool = False,
        row_group_size: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.schema = schema
        self.rows_per_part = int(rows_per_part)
        self.compression = compression
        self.hive = hive
        self.strict = strict
        self.row_group_size = row_group_size
        self.parts = 0  # part files started
        self.rows_in_part = 0
        self._writer: pq.ParquetWriter | None = None

    def _next_path(self) -> Path:
        if not self.hive:
            return self.folder / f"part-{self.parts:05d}.parquet"
        sub = self.folder / f"partition={self.parts + 1}"
        sub.mkdir()
        return sub / "part-0.parquet"

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` (``schema``'s columns) to the current part, starting a new one first when it is full."""
        n = batch.num_rows
        full = self.rows_in_part + n > self.rows_per_part if self.strict else self.rows_in_part >= self.rows_per_part
        if self._writer is None or full:
            self.close()
            self._writer = pq.ParquetWriter(self._next_path(), self.schema, compression=self.compression)
            self.parts += 1
            self.rows_in_part = 0
        if self.row_group_size == "batch":
            self._writer.write_batch(batch, row_group_size=n)
        else:
            self._writer.write_batch(batch)
        self.rows_in_part += n

    def close(self) -> None:
        """Close the part being written (the next :meth:`write` starts a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
