"""Shared pieces of the service tests: a fake assessor and request rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.cli import UserError
from fusion.demo.paired import PairedConfig, make_paired_regions
from service.config import ServiceConfig
from service.regions import check_regions, from_request


class FakeAssessor:
    """Checks regions like the real one and 'runs' a job by writing a tiny result."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg

    def check(self, request: dict[str, Any]) -> None:
        check_regions(from_request(request), self.cfg.max_area_km2)

    def run(self, request: dict[str, Any], folder: Path, progress) -> dict[str, Any]:
        if request.get("bbox") == [1, 1, 1.1, 1.1]:
            raise UserError("no imagery for this region and date")
        progress(0.5, "halfway")
        (folder / "report.html").write_text("<html></html>")
        return {"regions": {"type": "FeatureCollection", "features": []}, "n": len(from_request(request))}

    def scenes(self) -> list[dict[str, Any]]:
        return [{"name": "demo", "bbox": [0, 0, 1, 1]}]


def rows(n: int = 3) -> list[dict[str, Any]]:
    pairs = make_paired_regions(PairedConfig(n_regions=n, size=16, seed=5))
    rows = pairs.table.drop(columns=["landslide"]).to_dict(orient="records")
    for row, img in zip(rows, pairs.images, strict=True):
        row["image_array"] = img  # replaced below by an encoding the API takes
    return rows


def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r.pop("image_array", None)
    return rows
