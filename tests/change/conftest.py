"""Fixtures of the change tests: the synthetic event world, written once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.change.helpers import write_synthetic_items


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(items.json, dem.tif)`` of :func:`tests.change.helpers.write_synthetic_items`."""
    return write_synthetic_items(tmp_path_factory.mktemp("world"))
