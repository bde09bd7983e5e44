"""The one part writer of the cell tables (``tabular.large.source.PartWriter``): both layouts and roll rules."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tabular.large.source import PartWriter


def _batch(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(range(n), pa.int64())], names=["v"])


def _rows(files: list[Path]) -> list[int]:
    return [pq.ParquetFile(f).metadata.num_rows for f in files]


def test_flat_parts_roll_once_full(tmp_path: Path) -> None:
    schema = _batch(1).schema
    with PartWriter(tmp_path, schema, rows_per_part=5) as w:
        for _ in range(3):
            w.write(_batch(3))
    files = sorted(tmp_path.glob("part-*.parquet"))
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert _rows(files) == [6, 3] and w.parts == 2


def test_hive_parts_roll_before_overflow_with_one_row_group_per_batch(tmp_path: Path) -> None:
    schema = _batch(1).schema
    with PartWriter(tmp_path, schema, rows_per_part=5, hive=True, strict=True, row_group_size="batch") as w:
        for n in (2, 3, 3, 4):
            w.write(_batch(n))
    files = sorted(tmp_path.glob("partition=*/part-0.parquet"))
    assert [f.parent.name for f in files] == ["partition=1", "partition=2", "partition=3"]
    assert _rows(files) == [5, 3, 4] and w.parts == 3
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 2
