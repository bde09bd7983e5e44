"""Shared by the training commands: ``--register-name`` / ``--no-register`` and registering the model with its card
(:mod:`common.registry`, :mod:`common.model_card`)."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from common.model_card import build_card, segmenter_fields
from common.registry import CANDIDATE, DEFAULT_NAMES, register_model


def add_register_args(p: argparse.ArgumentParser, kind: str) -> None:
    """``--register-name`` (default ``landslide-<kind>``) and ``--no-register``."""
    p.add_argument(
        "--register-name",
        default=DEFAULT_NAMES[kind],
        help="MLflow Model Registry name; the new version gets alias @candidate (default %(default)s)",
    )
    p.add_argument("--no-register", action="store_true", help="do not register the model in the Model Registry")


def segmenter_meta(model_uri: str) -> dict[str, Any]:
    """``model_meta.json`` of a logged segmenter (``runs:/<id>/segmenter``), or ``{}`` when it cannot be read."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            uri = f"{model_uri.rstrip('/')}/model_meta.json"
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - the card then says "not recorded"
            return {}


def register_trained(
    kind: str,
    model_uri: str,
    *,
    name: str,
    card_run_id: str,
    data_name: str,
    data_kind: str,
    metrics: Mapping[str, float] | None = None,
    protocol: str | None = None,
    threshold: float | None = None,
    extra: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    tracking_uri: str | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Card + registration of one trained model; returns ``models:/NAME/VERSION`` and prints where it went."""
    client = MlflowClient(mlflow.get_tracking_uri())
    run = client.get_run(card_run_id)
    card = build_card(
        title=f"{name} (run {card_run_id[:8]})",
        kind=kind,
        run_id=card_run_id,
        params=run.data.params,
        metrics=dict(metrics) if metrics is not None else dict(run.data.metrics),
        data_name=data_name,
        data_kind=data_kind,
        protocol=protocol,
        threshold=threshold,
        extra=extra,
        notes=notes,
    )
    mv = register_model(model_uri, name, card, tracking_uri=tracking_uri)
    synthetic = " (trained on SYNTHETIC data: demonstration only)" if card.training_data.synthetic else ""
    log(f"registered {name} version {mv.version} as models:/{name}@{CANDIDATE}{synthetic}")
    return f"models:/{name}/{mv.version}"


def imagery_extra(model_uri: str) -> dict[str, Any]:
    """Card fields of a segmenter from its metadata (band set, temporal set, GSD, threshold, training data)."""
    return segmenter_fields(segmenter_meta(model_uri))
