"""Model cards: what a model learnt from, how it was measured and where it must not be used (``MODEL_CARD.md``).

:func:`build_card` collects the facts from the MLflow run that made the model (the data fingerprint params
``data_sha256`` / ``data_source`` / ``data_rows``, the protocol, the metrics with their spread or intervals)
plus what the caller knows (kind of data, band set, threshold, segmenter metadata), and :func:`render_card`
writes the Markdown that is logged as the run artifact ``MODEL_CARD.md`` and set as the registered version's
description. A segmenter's metadata may carry ``training_data: {name, kind, fingerprint}``, ``gsd_m`` and
``temporal``; they are read when present and reported as "not recorded" otherwise.

Synthetic-data models say so in the title, the training-data section and the limits, and carry the tag
``landslide.synthetic=true`` (:data:`SYNTHETIC_TAG`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Registered model names per kind and the aliases (declared here, without MLflow, so that --help stays fast;
#: :mod:`common.registry` registers under them).
DEFAULT_NAMES: dict[str, str] = {
    "tabular": "landslide-tabular",
    "imagery": "landslide-imagery",
    "fusion": "landslide-fuser",
}
CANDIDATE = "candidate"
CHAMPION = "champion"

CARD_ARTIFACT = "MODEL_CARD.md"
SYNTHETIC_TAG = "landslide.synthetic"
TRAINING_DATA_TAG = "landslide.training_data"
DATA_KINDS = ("real", "synthetic", "unknown")
NOT_RECORDED = "not recorded"

INTENDED_USE: dict[str, str] = {
    "imagery": "Segmenting landslide scars in Sentinel-2 L2A patches or scenes with the band set and ground "
    "sampling distance below, as a screening aid whose detections an analyst checks.",
    "tabular": "Scoring regions or cells for landslide presence or susceptibility from the feature table it was "
    "trained on (same columns, units and encoding), as a screening aid.",
    "fusion": "Combining the tabular and imagery probabilities of the same regions into one per-region score, for "
    "the two models it was fitted on only.",
}
LIMITS: dict[str, list[str]] = {
    "imagery": [
        "Sensitive to clouds, shadows, snow and fresh bare soil (quarries, fields, river bars), which look like scars.",
        "Patches from other sensors, another processing level or another ground sampling distance are out of scope.",
        "Regions and seasons unlike the training data may score far worse than the metrics below.",
    ],
    "tabular": [
        "Only valid for tables built the same way as the training table; missing or rescaled columns change the "
        "scores silently.",
        "Susceptibility is not a prediction of when a landslide happens.",
    ],
    "fusion": ["Only valid with the very tabular and imagery models it was fitted on (their run ids are tagged)."],
}
SYNTHETIC_LIMIT = (
    "TRAINED ON SYNTHETIC DATA: a demonstration model. Its outputs on real data are meaningless (a synthetic "
    "imagery model flagged 57 % of a desert tile as landslide); never use it on a real scene or region."
)


@dataclass(frozen=True)
class TrainingData:
    """What a model learnt from: ``name`` (path or generator), ``kind`` (real/synthetic/unknown), fingerprint."""

    name: str
    kind: str = "unknown"
    fingerprint: str = ""
    rows: str = ""
    region: str = ""
    dates: str = ""

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"


@dataclass(frozen=True)
class ModelCard:
    """Everything :func:`render_card` prints (free text kept short; metrics as name -> value)."""

    title: str
    kind: str
    run_id: str
    training_data: TrainingData
    band_set: str = NOT_RECORDED
    temporal_set: str = NOT_RECORDED
    gsd_m: str = NOT_RECORDED
    protocol: str = NOT_RECORDED
    threshold: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    intended_use: str = ""
    limits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tags(self) -> dict[str, str]:
        """Tags for the registered version (and the run)."""
        return {
            SYNTHETIC_TAG: str(self.training_data.synthetic).lower(),
            TRAINING_DATA_TAG: self.training_data.name[:250],
            "landslide.data_kind": self.training_data.kind,
            "landslide.data_fingerprint": self.training_data.fingerprint[:64],
        }


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def metric_lines(metrics: Mapping[str, float], limit: int = 24) -> list[str]:
    """``name: mean ± std`` (from ``*_mean``/``*_std``), ``name: value [lo, hi]`` (from ``*_lo``/``*_hi``) or
    ``name: value``; per-epoch, timing and fold-wise entries left out."""
    skip = ("epoch", "seconds", "_s", "time", "lr")
    out: list[str] = []
    used: set[str] = set()
    for key in sorted(metrics):
        if key in used or any(key.endswith(s) or key.startswith(s) for s in skip) or key.startswith("fold"):
            continue
        if key.endswith("_std") or key.endswith("_lo") or key.endswith("_hi"):
            continue
        if key.endswith("_mean"):
            base = key[: -len("_mean")]
            std = metrics.get(f"{base}_std")
            spread = f" ± {_fmt(std)} (std over folds)" if std is not None else ""
            out.append(f"{base}: {_fmt(metrics[key])}{spread}")
        else:
            lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
            interval = f" [{_fmt(lo)}, {_fmt(hi)}] (95 % interval)" if lo is not None and hi is not None else ""
            out.append(f"{key}: {_fmt(metrics[key])}{interval}")
        used.add(key)
        if len(out) >= limit:
            out.append("... (all metrics in the MLflow run)")
            break
    return out


def render_card(card: ModelCard) -> str:
    """The card as Markdown."""
    td = card.training_data
    synthetic = " (SYNTHETIC DATA)" if td.synthetic else ""
    lines = [f"# Model card: {card.title}{synthetic}", "", f"Kind: {card.kind}. MLflow run: `{card.run_id}`.", ""]
    lines += ["## Training data", f"- name: {td.name}", f"- kind: {td.kind}"]
    lines += [f"- fingerprint (sha256): {td.fingerprint or NOT_RECORDED}"]
    for label, value in (("rows / patches", td.rows), ("region", td.region), ("dates", td.dates)):
        lines.append(f"- {label}: {value or NOT_RECORDED}")
    lines += ["", "## Inputs", f"- band set: {card.band_set}", f"- temporal set: {card.temporal_set}"]
    lines += [f"- ground sampling distance: {card.gsd_m}", ""]
    lines += ["## Evaluation", f"- protocol: {card.protocol}"]
    lines += [f"- decision threshold: {_fmt(card.threshold) if card.threshold is not None else NOT_RECORDED}"]
    lines += [f"- {m}" for m in metric_lines(card.metrics)] or ["- no metrics logged"]
    lines += ["", "## Intended use", card.intended_use or INTENDED_USE.get(card.kind, NOT_RECORDED), ""]
    limits = ([SYNTHETIC_LIMIT] if td.synthetic else []) + list(card.limits or LIMITS.get(card.kind, []))
    lines += ["## Known limits", *[f"- {text}" for text in limits]]
    if card.notes:
        lines += ["", "## Notes", *[f"- {n}" for n in card.notes]]
    return "\n".join(lines) + "\n"


def segmenter_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Band set, temporal set, GSD, threshold and (when recorded) training data from a segmenter's metadata."""
    channels = meta.get("channels") or []
    bands = meta.get("band_order") or []
    band_set = ", ".join(bands) or NOT_RECORDED
    if channels and list(channels) != list(bands):
        more = " ..." if len(channels) > 20 else ""
        band_set += f" -> {len(channels)} model channels ({', '.join(channels[:20])}{more})"
    gsd = meta.get("gsd_m")
    out: dict[str, Any] = {
        "band_set": band_set,
        "temporal_set": str(meta.get("temporal") or meta.get("temporal_set") or "single date (one image per patch)"),
        "gsd_m": f"{float(gsd):g} m" if gsd is not None else NOT_RECORDED,
        "threshold": meta.get("threshold"),
    }
    td = meta.get("training_data")
    if isinstance(td, Mapping):
        out["training_data"] = {k: str(td[k]) for k in ("name", "kind", "fingerprint") if td.get(k) is not None}
    return out


def build_card(
    *,
    title: str,
    kind: str,
    run_id: str,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    data_name: str,
    data_kind: str,
    protocol: str | None = None,
    threshold: float | None = None,
    extra: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> ModelCard:
    """A card from a run's ``params``/``metrics`` (as MLflow returns them) and what the caller knows.

    ``extra`` may hold ``band_set``, ``temporal_set``, ``gsd_m``, ``threshold`` and ``training_data``
    (``{name, kind, fingerprint}``, e.g. from :func:`segmenter_fields`), which win over the defaults.
    """
    extra = dict(extra or {})
    td_extra = extra.pop("training_data", {}) or {}
    kind_of_data = td_extra.get("kind") or data_kind
    if kind_of_data not in DATA_KINDS:
        kind_of_data = "unknown"
    td = TrainingData(
        name=td_extra.get("name") or data_name,
        kind=kind_of_data,
        fingerprint=td_extra.get("fingerprint") or params.get("data_sha256", ""),
        rows=params.get("data_rows", ""),
    )
    thr = extra.pop("threshold", None)
    return ModelCard(
        title=title,
        kind=kind,
        run_id=run_id,
        training_data=td,
        protocol=protocol or params.get("protocol") or NOT_RECORDED,
        threshold=threshold if threshold is not None else (float(thr) if thr is not None else None),
        metrics={k: float(v) for k, v in metrics.items()},
        notes=list(notes),
        **{k: str(v) for k, v in extra.items() if k in ("band_set", "temporal_set", "gsd_m")},
    )
