"""Shared by the training commands: ``--register-name`` / ``--no-register`` and registering the model with its card
(:mod:`common.registry`, :mod:`common.model_card`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.cli import UserError
from common.model_card import (
    CANDIDATE,
    CHAMPION,
    DEFAULT_NAMES,
    SYNTHETIC_TAG,
    TRAINING_DATA_TAG,
    build_card,
    segmenter_fields,
)
from common.options import arg


def register_options(kind: str) -> type:
    """The ``register`` option group of a training command for models of ``kind`` (``tabular``, ``imagery``,
    ``fusion``): ``--register-name`` (default ``landslide-<kind>``) and ``--no-register``."""
    cls = dataclasses.make_dataclass(
        f"Register{kind.title()}Options",
        [
            (
                "register_name",
                str,
                arg(
                    "MLflow Model Registry name; the new version gets alias @candidate (default %(default)s)",
                    default=DEFAULT_NAMES[kind],
                ),
            ),
            ("no_register", bool, arg("do not register the model in the Model Registry", default=False)),
        ],
    )
    cls.__doc__ = "model registry"
    cls.__module__ = __name__
    return cls


RegisterTabularOptions = register_options("tabular")
RegisterImageryOptions = register_options("imagery")
RegisterFusionOptions = register_options("fusion")


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
    import mlflow  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

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
    import mlflow  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    from common.registry import register_model  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    client = mlflow.MlflowClient(mlflow.get_tracking_uri())
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


def warn_if_synthetic(uri: str, tags: Mapping[str, str], what: str) -> None:
    """A warning on stderr naming a model trained on synthetic data (its outputs on real data are meaningless)."""
    if tags.get(SYNTHETIC_TAG) == "true":
        print(
            f"warning: {what} {uri} was trained on SYNTHETIC data ({tags.get(TRAINING_DATA_TAG, 'built-in data')}); "
            "its output on a real scene is meaningless: use a model trained on real data",
            file=sys.stderr,
            flush=True,
        )


def model_or_champion(
    uri: str | None, kind: str, flag: str, *, required: bool, log: Callable[[str], None] = print
) -> str | None:
    """``uri``, or when none is given ``models:/landslide-<kind>@champion`` (``None`` if that is not registered
    and not ``required``, a one-line error if it is). Says which registered version is used and warns about a
    synthetic-data model. Call after ``setup_tracking``."""
    import mlflow  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    from common.registry import resolve_version  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    if uri is None:
        champion = f"models:/{DEFAULT_NAMES[kind]}@{CHAMPION}"
        info = resolve_version(champion)
        if info is None:
            if required:
                raise UserError(
                    f"{flag}: none given and {champion} is not registered in {mlflow.get_tracking_uri()}; pass {flag} "
                    f"or promote a version: python -m pipelines.promote {DEFAULT_NAMES[kind]} VERSION --alias champion"
                )
            return None
        uri = champion
    info = resolve_version(uri)
    if info is not None:
        name, version, tags = info
        log(f"{flag} {uri}: {name} version {version}")
        warn_if_synthetic(uri, tags, f"{flag}")
        return uri
    run_id = _run_id_of(uri)
    if run_id is not None:
        try:
            warn_if_synthetic(uri, mlflow.MlflowClient(mlflow.get_tracking_uri()).get_run(run_id).data.tags, flag)
        except Exception:  # noqa: BLE001 - the loader reports a bad URI itself
            pass
    return uri


def _run_id_of(uri: str) -> str | None:
    from common.tracking import RUN_ID_PATTERN  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    text = uri.strip()
    if RUN_ID_PATTERN.match(text):
        return text
    if text.startswith("runs:/"):
        return text[len("runs:/") :].split("/", 1)[0] or None
    return None
