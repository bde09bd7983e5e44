"""``python -m pipelines.promote NAME VERSION --alias champion``: move a Model Registry alias to a version.

Every training command registers its model (``landslide-tabular``, ``landslide-imagery``, ``landslide-fuser``
or ``--register-name``) with the alias ``@candidate``; promoting a version makes ``models:/NAME@champion``
(which every command that takes a model accepts) point at it. Prints the version the alias pointed at before.
A version trained on synthetic data is refused as ``champion`` unless ``--allow-synthetic``.

Example::

    python -m pipelines.promote landslide-imagery 3 --alias champion
"""

from __future__ import annotations

from dataclasses import dataclass

from common.cli import UserError
from common.model_card import CHAMPION, SYNTHETIC_TAG
from common.options import arg
from pipelines._command import Command, Context


@dataclass
class PromoteOptions:
    """The arguments of ``python -m pipelines.promote``."""

    name: str = arg("registered model name, e.g. landslide-imagery", positional=True)
    version: str = arg("version number to point the alias at", positional=True)
    alias: str = arg("alias to move (default %(default)s)", default=CHAMPION)
    allow_synthetic: bool = arg("allow a synthetic-data model as champion", default=False)
    tracking_uri: str | None = arg("MLflow tracking URI (default: $MLFLOW_TRACKING_URI, ...)", default=None)
    json: bool = arg("print the summary as one JSON object", default=False)
    verbose: bool = arg("show third-party warnings", default=False)


def run(o: PromoteOptions, ctx: Context) -> dict[str, object]:
    """Move the alias (refusing a synthetic-data champion unless allowed); the summary names the previous version."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - MLflow loads when the command runs: --help stays fast

    from common.registry import set_alias  # noqa: PLC0415 - MLflow loads when the command runs
    from common.tracking import setup_tracking  # noqa: PLC0415 - MLflow loads when the command runs

    if not str(o.version).isdigit():
        raise UserError(f"VERSION {o.version!r}: expected a version number (see the model's page in the MLflow UI)")
    uri = setup_tracking(o.tracking_uri, verbose=o.verbose)
    if o.alias == CHAMPION and not o.allow_synthetic:
        client = MlflowClient(uri, registry_uri=uri)
        try:
            tags = client.get_model_version(o.name, o.version).tags or {}
        except Exception:  # noqa: BLE001 - set_alias below names what is missing
            tags = {}
        if tags.get(SYNTHETIC_TAG) == "true":
            raise UserError(
                f"{o.name} version {o.version} was trained on synthetic data; a champion is used on real scenes "
                "by default: pass --allow-synthetic to promote it anyway"
            )
    previous = set_alias(o.name, o.version, o.alias, tracking_uri=uri)
    return {"model": f"models:/{o.name}@{o.alias}", "version": o.version, "previous_version": previous or "none"}


COMMAND = Command("promote", PromoteOptions, run, doc=__doc__)
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.exit()
