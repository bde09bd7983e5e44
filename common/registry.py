"""The MLflow Model Registry: every trained model registered with its card, aliases moved by ``pipelines.promote``.

* Names: ``landslide-tabular``, ``landslide-imagery``, ``landslide-fuser`` (:data:`DEFAULT_NAMES`), or the
  command's ``--register-name``.
* A new version gets the alias ``@candidate`` (:data:`CANDIDATE`); ``python -m pipelines.promote NAME VERSION
  --alias champion`` moves an alias. Loaders take ``models:/NAME@ALIAS`` (and ``models:/NAME/VERSION``)
  through :func:`common.tracking.download_model`.
* The version's description is the model card (:mod:`common.model_card`), which is also logged to the run as
  ``MODEL_CARD.md``; the card's tags (synthetic or real data, fingerprint) go on the version.

A version's source is the run artifact folder that the project's loaders read: ``runs:/<id>/segmenter``
becomes ``<run artifact root>/segmenter``; ``runs:/<id>`` the whole run's artifacts (the fuser's
``fuser.json``); an MLflow 3 logged model ``models:/m-...`` is registered as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common.errors import UserError, one_line
from common.model_card import CANDIDATE, CARD_ARTIFACT, CHAMPION, DEFAULT_NAMES, ModelCard, render_card  # noqa: F401 - names re-exported
from common.tracking import resolve_tracking_uri

MAX_DESCRIPTION = 5000


def _client(tracking_uri: str | None) -> MlflowClient:
    uri = resolve_tracking_uri(tracking_uri) if tracking_uri else mlflow.get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _source(client: MlflowClient, model_uri: str) -> tuple[str, str | None]:
    """``(source, run_id)`` of a version for ``runs:/<id>[/<path>]``."""
    rest = model_uri[len("runs:/") :].strip("/")
    run_id, _, path = rest.partition("/")
    root = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return (f"{root}/{path}" if path else root), run_id


def register_model(
    model_uri: str,
    name: str,
    card: ModelCard,
    *,
    alias: str = CANDIDATE,
    tracking_uri: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> Any:
    """Register ``model_uri`` as a new version of ``name``, card as its description, ``alias`` pointing to it.

    Also logs the card as ``MODEL_CARD.md`` and its tags to the run ``card.run_id``. Returns the
    ``ModelVersion``.
    """
    client = _client(tracking_uri)
    text = render_card(card)
    tags = {**card.tags(), **(extra_tags or {})}
    try:
        try:
            client.create_registered_model(name, description=f"Landslide {card.kind} models (see each version's card).")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
                raise
        if model_uri.startswith("runs:/"):
            source, run_id = _source(client, model_uri)
            mv = client.create_model_version(
                name, source=source, run_id=run_id, tags=tags, description=text[:MAX_DESCRIPTION]
            )
        elif model_uri.startswith("models:/m-"):
            mv = mlflow.register_model(model_uri, name, tags=tags)
            client.update_model_version(name, mv.version, description=text[:MAX_DESCRIPTION])
        else:
            raise UserError(f"cannot register {model_uri}: expected runs:/<id>/<path> or a logged model models:/m-...")
        client.set_registered_model_alias(name, alias, mv.version)
        if card.run_id:
            client.log_text(card.run_id, text, CARD_ARTIFACT)
            for key, value in tags.items():
                client.set_tag(card.run_id, key, value)
    except MlflowException as exc:
        raise UserError(f"cannot register {model_uri} as {name}: {one_line(exc)[:200]}") from None
    return mv


def set_alias(name: str, version: str | int, alias: str, *, tracking_uri: str | None = None) -> str | None:
    """Point ``name@alias`` at ``version``; returns the version it pointed at before (``None`` if new)."""
    client = _client(tracking_uri)
    if not alias or not alias.replace("-", "").replace("_", "").isalnum() or alias.lower().startswith("v"):
        raise UserError(f"--alias {alias!r}: expected a name like champion or candidate (letters, digits, - and _)")
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = ", ".join(m.name for m in client.search_registered_models()) or "none"
        raise UserError(f"registered model {name!r} not found; registered: {names}") from None
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise UserError(f"{name} has no version {version}; versions: {versions}") from None
    try:
        previous: str | None = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, str(version))
    return previous


def resolve_version(uri: str, *, tracking_uri: str | None = None) -> tuple[str, str, dict[str, str]] | None:
    """``(name, version, tags)`` behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; ``None`` for other
    URIs (or a logged model ``models:/m-...``)."""
    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return None
    rest = uri[len("models:/") :].strip("/")
    client = _client(tracking_uri)
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = rest.split("/", 1)
            mv = client.get_model_version(name, version)
    except (MlflowException, ValueError):
        return None
    return mv.name, str(mv.version), dict(mv.tags or {})
