"""``python -m pipelines.promote NAME VERSION --alias champion``: move a Model Registry alias to a version.

Every training command registers its model (``landslide-tabular``, ``landslide-imagery``, ``landslide-fuser``
or ``--register-name``) with the alias ``@candidate``; promoting a version makes ``models:/NAME@champion``
(which every command that takes a model accepts) point at it. Prints the version the alias pointed at before.
A version trained on synthetic data is refused as ``champion`` unless ``--allow-synthetic``.

Example::

    python -m pipelines.promote landslide-imagery 3 --alias champion
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mlflow.tracking import MlflowClient

from common.cli import UserError, print_summary, run_main
from common.model_card import SYNTHETIC_TAG
from common.registry import CHAMPION, set_alias
from common.tracking import setup_tracking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.promote", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="registered model name, e.g. landslide-imagery")
    p.add_argument("version", help="version number to point the alias at")
    p.add_argument("--alias", default=CHAMPION, help="alias to move (default %(default)s)")
    p.add_argument("--allow-synthetic", action="store_true", help="allow a synthetic-data model as champion")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, ...)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--verbose", action="store_true", help="show third-party warnings")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not str(args.version).isdigit():
        raise UserError(f"VERSION {args.version!r}: expected a version number (see the model's page in the MLflow UI)")
    uri = setup_tracking(args.tracking_uri, verbose=args.verbose)
    if args.alias == CHAMPION and not args.allow_synthetic:
        client = MlflowClient(uri, registry_uri=uri)
        try:
            tags = client.get_model_version(args.name, args.version).tags or {}
        except Exception:  # noqa: BLE001 - set_alias below names what is missing
            tags = {}
        if tags.get(SYNTHETIC_TAG) == "true":
            raise UserError(
                f"{args.name} version {args.version} was trained on synthetic data; a champion is used on real scenes "
                "by default: pass --allow-synthetic to promote it anyway"
            )
    previous = set_alias(args.name, args.version, args.alias, tracking_uri=uri)
    print_summary(
        {
            "model": f"models:/{args.name}@{args.alias}",
            "version": args.version,
            "previous_version": previous or "none",
        },
        as_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, sys.argv[1:]))
