"""Fused per-region scoring: tabular model + segmenter + stacker -> one output row per region.

The models are passed in as objects (duck-typed), so this module never imports torch:

* tabular model: ``feature_names_`` (list of columns), ``predict_proba(X) -> (n, 2) or (n,)``,
  ``threshold_`` and optionally ``explain(X, top_k)`` (:class:`tabular.model.LandslideClassifier`);
* segmenter: ``predict(images (N, 14, H, W), batch_size=...) -> {"prob", "mask", "patch_prob"}``,
  ``threshold``, ``channel_set`` (:class:`imagery.inference.serving.Segmenter`);
* fuser: :class:`fusion.stacking.StackingFuser`.

Output columns (:data:`OUTPUT_COLUMNS`, then the ``img_*`` region features of
:mod:`fusion.region_features`): ``region_id``, ``p_tabular``, ``p_imagery``, ``p_fused``,
``decision``, ``agree``, ``evidence``, ``reason``, ``top_features`` (the tabular model's top SHAP
features, ``;``-separated ``name(+0.12)``), ``mask_path`` (PNG, 0/255, of the segmenter's mask),
``note`` (why a modality is missing, e.g. an unreadable image).

Large tables are scored in batches and appended to ``<out>.partial``; the finished file is renamed
onto ``<out>`` (so ``<out>`` is never half-written). ``resume=True`` keeps the rows already in
``<out>.partial`` and skips their region ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from common.atomic import WRITE_ERRNOS, atomic_path, atomic_write, write_error
from common.errors import UserError
from fusion.crosscheck import POLICIES, crosscheck
from fusion.models import (  # noqa: F401 - re-exported: the model checks' former home
    ChangeRule,
    Models,
    check_base_models,
    check_compatible,
    model_digest,
    tabular_feature_names,
)
from fusion.region_features import IMAGERY_FEATURES, imagery_region_features
from fusion.regions import ID_COLUMN, load_images, require_columns, resolve_image_refs

OUTPUT_COLUMNS: tuple[str, ...] = (
    "region_id",
    "p_tabular",
    "p_imagery",
    "p_fused",
    "decision",
    "agree",
    "evidence",
    "reason",
    "top_features",
    "mask_path",
    "note",
)
ALL_COLUMNS: tuple[str, ...] = OUTPUT_COLUMNS + IMAGERY_FEATURES


@dataclass(frozen=True)
class ScoringConfig:
    """How to score: decision ``policy`` (one of :data:`fusion.crosscheck.POLICIES`), regions per
    batch, patches per segmenter forward pass, SHAP ``top_k`` (0 = no explanations), mask writing,
    ``strict_images`` (image problems are errors instead of a tabular-only fallback),
    ``allow_missing_images`` (score even when no region has a readable image although an imagery model
    was given), ``allow_other_base_models`` (use base models that are not the fuser's base runs, with a
    warning in every row), and the ``weighted`` policy's imagery weight and threshold."""

    policy: str = "stacked"
    batch_size: int = 512
    imagery_batch_size: int = 16
    top_k: int = 3
    write_masks: bool = True
    strict_images: bool = False
    allow_missing_images: bool = False
    allow_other_base_models: bool = False
    imagery_weight: float = 0.5
    weighted_threshold: float = 0.5

    def result_key(self) -> dict[str, str]:
        """The options that change a scored row (batch sizes do not)."""
        skip = {"batch_size", "imagery_batch_size"}
        return {f"scoring.{k}": str(v) for k, v in asdict(self).items() if k not in skip}

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.batch_size < 1 or self.imagery_batch_size < 1:
            raise UserError("batch sizes must be >= 1")
        if self.top_k < 0:
            raise UserError(f"top_k must be >= 0, got {self.top_k}")


# ---------------------------------------------------------------------------- model adapters
def tabular_proba(model: Any, X: pd.DataFrame) -> np.ndarray:
    """P(landslide) ``(n,)`` from ``model.predict_proba`` (accepts ``(n, 2)`` or ``(n,)`` output)."""
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    return p[:, 1] if p.ndim == 2 else p.reshape(-1)


def format_top_features(explanations: Any, n: int) -> list[str]:
    """``;``-joined top features per row from what ``explain`` returned.

    Accepts a DataFrame with ``feature``/``shap`` style columns per row rank, a list (per row) of
    ``(name, value)`` pairs / dicts / strings, or a DataFrame with one string column.
    """
    if explanations is None:
        return [""] * n
    if isinstance(explanations, pd.DataFrame):
        df = explanations
        ranks = sorted(
            int(c.split("_")[1]) for c in df.columns if str(c).startswith("reason_") and str(c).endswith("_feature")
        )
        if ranks:  # LandslideClassifier.explain: reason_{i}_feature / reason_{i}_shap
            names = [df[f"reason_{i}_feature"].astype(str).to_numpy() for i in ranks]
            shaps = [
                df[f"reason_{i}_shap"].to_numpy(dtype=np.float64) if f"reason_{i}_shap" in df else None for i in ranks
            ]
            return [
                ";".join(
                    f"{names[j][r]}({shaps[j][r]:+.2f})" if shaps[j] is not None else str(names[j][r])
                    for j in range(len(ranks))
                )
                for r in range(len(df))
            ]
        if "top_features" in df.columns:
            return [str(v) for v in df["top_features"].tolist()]
        feat_cols = [c for c in df.columns if str(c).startswith("feature") or str(c).startswith("top")]
        val_cols = [
            c for c in df.columns if "shap" in str(c) or str(c).startswith("value") or str(c).startswith("contrib")
        ]
        if feat_cols:
            out = []
            for _, row in df.iterrows():
                parts = []
                for j, fc in enumerate(feat_cols):
                    if pd.isna(row[fc]):
                        continue
                    v = row[val_cols[j]] if j < len(val_cols) else None
                    parts.append(f"{row[fc]}({float(v):+.2f})" if v is not None and not pd.isna(v) else str(row[fc]))
                out.append(";".join(parts))
            return out
        return [";".join(map(str, r)) for r in df.astype(str).to_numpy().tolist()]
    out = []
    for row in explanations:
        parts = []
        for item in row if not isinstance(row, str) else [row]:
            if isinstance(item, dict):
                name = item.get("feature", item.get("name", ""))
                val = item.get("shap", item.get("value", item.get("contribution")))
                parts.append(f"{name}({float(val):+.2f})" if val is not None else str(name))
            elif isinstance(item, tuple | list) and len(item) >= 2:
                parts.append(f"{item[0]}({float(item[1]):+.2f})")
            else:
                parts.append(str(item))
        out.append(";".join(parts))
    return out


class RegionScorer:
    """Score batches of regions with whichever models are given (at least one base model).

    :meth:`score_evidence` builds the fused row from evidence already in hand (a tabular feature row and
    the imagery region features): the one place where the models are fused and a region decided, used by
    the patch path (:meth:`score_batch`, ``/v1/score``, ``pipelines.score_regions``) and by the scene path
    (:mod:`service.assess`, ``/v1/assess``). Thresholds and the default policy: :mod:`fusion.models`.
    """

    def __init__(
        self,
        tabular_model: Any | None = None,
        segmenter: Any | None = None,
        fuser: Any | None = None,
        config: ScoringConfig = ScoringConfig(),
    ) -> None:
        models = Models(tabular_model, segmenter, fuser)
        #: written into every row's note when other base models were allowed
        self.warning = models.check(config.allow_other_base_models)
        self.crosscheck_config = models.crosscheck_config(
            config.policy, config.imagery_weight, config.weighted_threshold
        )
        self.models = models
        self.tabular_model, self.segmenter, self.fuser, self.config = tabular_model, segmenter, fuser, config
        self.features = tabular_feature_names(tabular_model) if tabular_model is not None else []
        #: the third evidence's rule (:class:`fusion.models.ChangeRule`), used when change features are given
        self.change_rule = ChangeRule()

    @classmethod
    def of(cls, models: Models | tuple[Any, Any, Any], config: ScoringConfig | None = None) -> RegionScorer:
        """A scorer of ``models``; without ``config``, the default policy of :meth:`Models.default_policy`."""
        m = Models.of(models)
        config = config or ScoringConfig(policy=m.default_policy(), write_masks=False)
        return cls(m.tabular, m.segmenter, m.fuser, config)

    def check_table(self, table: pd.DataFrame, source: str = "region table") -> None:
        """Raise if ``table`` lacks a column the tabular model was trained with."""
        if self.tabular_model is not None:
            require_columns(table, self.features, "the tabular model", source)

    def score_evidence(
        self,
        ids: Sequence[Any] | np.ndarray,
        tabular_X: pd.DataFrame | None,
        imagery_features: pd.DataFrame | None,
        notes: Sequence[str] | None = None,
        *,
        has_tabular: np.ndarray | None = None,
        change_features: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The fused rows (:data:`ALL_COLUMNS`, ``mask_path`` empty) of N regions from their evidence.

        ``tabular_X``: the tabular model's feature columns, one row per region (``None``: no tabular
        evidence); ``has_tabular`` ``(N,)`` bool: the rows that are tabular evidence (default: every row;
        LightGBM takes NaN features as missing values). ``imagery_features``: the :data:`IMAGERY_FEATURES`
        per region, all NaN where a region has no imagery evidence (``None``: none has). ``notes``: why a
        modality is missing, per region. Policy and thresholds: the scorer's (:mod:`fusion.models`).
        ``change_features``: the third evidence, the ``chg_*`` features of :mod:`imagery.change.region` per
        region (``None``: no event date, the rows are the two models' alone); fused by
        :attr:`change_rule` (:class:`fusion.models.ChangeRule`), which adds ``change``, ``change_reason``
        and the features after the columns above.
        """
        n = len(ids)
        notes = list(notes) if notes is not None else [""] * n
        p_tab = np.full(n, np.nan)
        top = [""] * n
        if self.tabular_model is not None and tabular_X is not None:
            ok = np.ones(n, bool) if has_tabular is None else np.asarray(has_tabular, bool)
            if ok.any():
                X = tabular_X.loc[:, self.features].iloc[np.flatnonzero(ok)].reset_index(drop=True)
                p_tab[ok] = tabular_proba(self.tabular_model, X)
                if self.config.top_k > 0 and hasattr(self.tabular_model, "explain"):
                    tops = format_top_features(self.tabular_model.explain(X, top_k=self.config.top_k), len(X))
                    for j, i in enumerate(np.flatnonzero(ok)):
                        top[i] = tops[j]
        if imagery_features is None:
            feats = pd.DataFrame(np.nan, index=range(n), columns=list(IMAGERY_FEATURES))
        else:
            feats = imagery_features.loc[:, list(IMAGERY_FEATURES)].reset_index(drop=True)
        p_img = feats["img_patch_prob"].to_numpy(dtype=np.float64, copy=True)
        if self.segmenter is None:
            p_img[:] = np.nan
        p_fused = None
        if self.fuser is not None:
            p_fused = self.fuser.predict_proba(pd.DataFrame({"p_tabular": p_tab, "p_imagery": p_img}))[:, 1]
        cc = crosscheck(p_tab, p_img, self.crosscheck_config, p_fused=p_fused, scar_area_m2=feats["img_largest_cc_m2"])
        out = pd.DataFrame({"region_id": ids})  # the ids' own dtype
        for c in ("p_tabular", "p_imagery", "p_fused", "decision", "agree", "evidence", "reason"):
            out[c] = cc[c].to_numpy()
        out["top_features"] = top
        out["mask_path"] = ""
        out["note"] = [f"{t}; {self.warning}" if t and self.warning else t or self.warning for t in notes]
        for c in IMAGERY_FEATURES:
            out[c] = feats[c].to_numpy()
        if change_features is not None:
            if len(change_features) != n:
                raise ValueError(f"change_features has {len(change_features)} rows, expected {n}")
            out = self.change_rule.apply(out, change_features.reset_index(drop=True))
        return out

    def score_batch(
        self,
        table: pd.DataFrame,
        images: np.ndarray | None = None,
        has_image: np.ndarray | None = None,
        notes: list[str] | None = None,
        masks_dir: Path | None = None,
    ) -> pd.DataFrame:
        """Score the regions of ``table`` (rows) with ``images`` ``(k, 14, H, W)`` for the rows where
        ``has_image`` is True (k = has_image.sum()); returns :data:`ALL_COLUMNS`."""
        n = len(table)
        has_image = np.zeros(n, bool) if has_image is None else np.asarray(has_image, bool)
        notes = list(notes) if notes is not None else [""] * n
        ids = table[ID_COLUMN].to_numpy()
        feats = pd.DataFrame(np.nan, index=range(n), columns=list(IMAGERY_FEATURES))
        mask_paths = [""] * n
        if self.segmenter is not None and images is not None and has_image.any():
            pred = self.segmenter.predict(images, batch_size=self.config.imagery_batch_size)
            rf = imagery_region_features(
                pred["prob"], self.segmenter.threshold, pred.get("patch_prob"), masks=pred["mask"]
            )
            rows = np.flatnonzero(has_image)
            feats.iloc[rows] = rf.to_numpy()
            if self.config.write_masks and masks_dir is not None:
                for j, r in enumerate(rows):
                    mask_paths[r] = str(write_mask_png(masks_dir / f"region_{ids[r]}.png", pred["mask"][j]))
        elif self.segmenter is not None:
            for r in range(n):
                if not notes[r]:
                    notes[r] = "no image for this region"
        tabular_X = table if self.tabular_model is not None else None
        out = self.score_evidence(ids, tabular_X, feats, notes)
        out["mask_path"] = mask_paths
        return out


def write_mask_png(path: Path, mask: np.ndarray) -> Path:
    """Write a ``(H, W)`` 0/1 mask as an 8-bit PNG (0/255), atomically."""
    ok, buf = cv2.imencode(".png", (np.asarray(mask) > 0).astype(np.uint8) * 255)
    if not ok:
        raise ValueError(f"cannot encode mask for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


# ---------------------------------------------------------------------------- resumable output
def partial_path(out: Path) -> Path:
    """Where batches are appended before the final rename: ``<out>.partial``."""
    return out.with_name(out.name + ".partial")


def _done_ids(partial: Path) -> set[str]:
    """Region ids (as strings) fully written in ``partial``; a torn last line is cut off first."""
    data = partial.read_bytes()
    cut = data.rfind(b"\n")
    if cut + 1 != len(data):  # the last line was torn by a crash: drop it
        with open(partial, "r+b") as fh:
            fh.truncate(cut + 1)
    if cut < 0:
        return set()
    try:
        df = pd.read_csv(partial, usecols=[ID_COLUMN], dtype={ID_COLUMN: str})
    except (pd.errors.EmptyDataError, ValueError):
        return set()
    return set(df[ID_COLUMN].astype(str))


OUTPUT_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class ScoreCounts:
    """What :func:`score_table` did: ``regions`` in the table, ``scored`` by this call, ``skipped``
    (already in the partial file), rows per ``evidence`` level, regions without a usable image when an
    imagery model was given among those scored by this call (``missing_images``), and the output path."""

    regions: int
    scored: int
    skipped: int
    evidence: dict[str, int]
    out: str
    missing_images: int = 0


def fingerprint_path(partial: Path) -> Path:
    """Where the fingerprint of a partial output lives: ``<out>.partial.json``."""
    return partial.with_name(partial.name + ".json")


def _check_resume(partial: Path, fingerprint: dict[str, str]) -> None:
    """Refuse to continue ``partial`` when it was made from other inputs (models, policy, table, flags)."""
    path = fingerprint_path(partial)
    if not path.is_file():
        raise UserError(
            f"--resume: {partial} has no fingerprint ({path.name}), so it cannot be shown to come from the same "
            "inputs; delete it to start over"
        )
    try:
        old = {str(k): str(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (ValueError, AttributeError):
        raise UserError(f"--resume: {path} is not a fingerprint file; delete {partial} to start over") from None
    changed = [k for k in sorted(set(old) | set(fingerprint)) if old.get(k) != fingerprint.get(k)]
    if changed:
        details = "; ".join(f"{k}: {old.get(k, '(none)')[:40]} -> {fingerprint.get(k, '(none)')[:40]}" for k in changed)
        raise UserError(
            f"--resume: {partial} was scored with other inputs ({details}); rerun without --resume to start over"
        )


def _check_images(refs: list[Any], table: pd.DataFrame, config: ScoringConfig) -> int:
    """Regions without a usable image reference; an error when none has one (unless allowed), or, with
    ``strict_images``, when any referenced image is missing."""
    missing = [i for i, ref in enumerate(refs) if ref.path is None or ref.problem]
    if config.strict_images:
        for i in missing:
            if refs[i].problem and refs[i].path is not None:
                raise UserError(f"region {table[ID_COLUMN].iloc[i]}: {refs[i].problem}")
    if refs and len(missing) == len(refs) and not config.allow_missing_images:
        example = next((r.problem for r in refs if r.problem), "no image reference")
        raise UserError(
            f"none of the {len(refs)} regions has a usable image ({example}); an imagery model was given, so check "
            "--images (or the 'image' column), or pass --allow-missing-images to score with the tabular model alone"
        )
    return len(missing)


def score_table(
    table: pd.DataFrame,
    scorer: RegionScorer,
    out: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    masks_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
    fingerprint: dict[str, str] | None = None,
) -> ScoreCounts:
    """Score every region of ``table`` into ``out`` (CSV, or Parquet for a ``.parquet`` path; see the
    module docstring).

    ``fingerprint``: everything that determines a row (model digests, policy and thresholds, the
    region table's digest, flags); stored beside the partial file, and a ``resume`` whose fingerprint
    differs is refused, naming what changed. ``on_batch(done, total)`` is called after each batch.
    """
    out_path = Path(out)
    if out_path.is_dir():
        raise UserError(f"--out {out_path} is a folder, expected a file path ({' or '.join(OUTPUT_SUFFIXES)})")
    if out_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(
            f"--out {out_path}: unsupported format {out_path.suffix or '(no suffix)'!r}; expected .csv or .parquet"
        )
    scorer.check_table(table)
    refs = resolve_image_refs(table, images_dir) if scorer.segmenter is not None else None
    if refs is not None:
        _check_images(refs, table, scorer.config)
    n_missing = 0
    mdir = Path(masks_dir) if masks_dir is not None else out_path.with_name(out_path.stem + "_masks")
    partial = partial_path(out_path)
    fp = dict(fingerprint or {})
    done: set[str] = set()
    if resume and partial.exists():
        _check_resume(partial, fp)
        done = _done_ids(partial)
    else:
        partial.unlink(missing_ok=True)
        with atomic_write(fingerprint_path(partial)) as fh:
            json.dump(fp, fh, indent=1)
    todo = np.flatnonzero(~table[ID_COLUMN].astype(str).isin(done).to_numpy())
    header = not (partial.exists() and partial.stat().st_size > 0)
    bs = scorer.config.batch_size
    bar = tqdm(total=len(todo), desc="scoring regions", unit="region", disable=not progress)
    for start in range(0, len(todo), bs):
        idx = todo[start : start + bs]
        batch = table.iloc[idx].reset_index(drop=True)
        images, has, notes = None, None, None
        if refs is not None:
            images, has, notes = load_images(
                [refs[i] for i in idx], batch[ID_COLUMN].tolist(), strict=scorer.config.strict_images
            )
            n_missing += int((~has).sum())
        scored = scorer.score_batch(batch, images, has, notes, mdir if scorer.config.write_masks else None)
        _append(partial, scored.to_csv(index=False, header=header))
        header = False
        bar.update(len(idx))
        if on_batch is not None:
            on_batch(start + len(idx), len(todo))
    bar.close()
    if not partial.exists():  # nothing to score and nothing resumed: still write a valid (header-only) file
        _append(partial, pd.DataFrame(columns=list(ALL_COLUMNS)).to_csv(index=False))
    result = pd.read_csv(partial, usecols=["evidence"], keep_default_na=False)
    if out_path.suffix.lower() == ".parquet":
        with atomic_path(out_path) as tmp:
            pd.read_csv(partial).to_parquet(tmp, index=False)
        partial.unlink()
    else:
        os.replace(partial, out_path)
    fingerprint_path(partial).unlink(missing_ok=True)
    return ScoreCounts(
        regions=int(len(table)),
        scored=int(len(todo)),
        skipped=int(len(table) - len(todo)),
        evidence={str(k): int(v) for k, v in result["evidence"].value_counts().items()},
        out=str(out_path),
        missing_images=n_missing,
    )


def _append(partial: Path, text: str) -> None:
    """Append rows to the partial file and make them durable (a killed run keeps every whole batch)."""
    try:
        with open(partial, "a", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(partial, exc) from exc
        raise
