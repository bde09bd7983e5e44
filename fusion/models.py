"""The three models a fused verdict is made of, and the one decision rule when the user picks none.

:class:`Models` holds the tabular model, the segmenter and the fuser (each ``None`` when not given),
loads them from their URIs (:meth:`Models.load`; the segmenter's module, and so torch, only when an
imagery model is given), checks that they belong together (:meth:`Models.check`), and owns two rules
every path (``/v1/score``, ``/v1/assess``, ``pipelines.assess``, ``pipelines.score_regions``) shares:

* **Default policy** (:meth:`Models.default_policy`): ``stacked`` with a fuser; without one ``any``
  when both base models are given (positive when either model is), else the one model given.
* **Thresholds** (:meth:`Models.crosscheck_config`): each base probability is cut at the fuser's
  out-of-fold max-F1 threshold for that model (``base_thresholds_``) when a fuser is given; without a
  fuser, at the model's own stored threshold: the tabular model's ``threshold_``, and for the imagery
  patch probability the segmenter's pixel threshold (the patch probability is the largest 3 x 3 mean
  of the pixel probability, so a region is positive when a 3 x 3 blob clears the pixel cut). 0.5 only
  when a model stores none. The fused probability is cut at the fuser's ``threshold_``.
* **Change evidence, the third evidence** (:class:`ChangeRule`; ``pipelines.assess`` / ``/v1/assess`` with an
  event date): the training-free detector's numbers over a region (:mod:`imagery.change.region`) give
  ``change``: ``"change"`` when at least ``min_flagged_share`` of the region's clearly observed pixels
  *and* at least ``min_flagged_m2`` are flagged (vegetation loss on a slope where there was vegetation);
  ``"no change"`` when fewer are flagged and at least ``min_observed_share`` of the region was observed
  clearly before and after; else ``"unknown: no clear observation"`` (absence of a view is never "no
  change"; a flagged scar in the part that was seen still counts). The fused verdict of the three:

  - ``change``: the decision is 1 (landslide likely), whatever the two trained models decided: a fresh
    loss of vegetation on a vegetated slope between the two windows is direct evidence of a new scar,
    which a single post-event image (clouds, an unfamiliar domain) and terrain susceptibility can miss;
    the reason says when the others disagree and what else strips slopes (logging, fire).
  - ``no change``: the trained models' decision stands (their scar may predate the event: the reason
    says so); where they have no evidence at all, the decision is 0 (the region was seen, nothing changed).
  - ``unknown``: the trained models' decision stands (unknown stays unknown).

  ``p_fused`` stays the trained models' fused probability (the change evidence is not calibrated; it moves
  the decision, never the probability); ``evidence`` gains ``+change`` (``change_only`` when it is the only
  one) wherever the change evidence is known; ``reason`` gains the change sentence. Without change
  evidence (no event date) nothing of this applies and the rows are exactly the two-model rows.

The models are duck-typed (see :mod:`fusion.scoring`), so this module never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from common.errors import UserError
from fusion.crosscheck import CrosscheckConfig

DEFAULT_THRESHOLD = 0.5
#: The three states of a region's change evidence (:class:`ChangeRule`).
CHANGE, NO_CHANGE, CHANGE_UNKNOWN = "change", "no change", "unknown: no clear observation"


def tabular_feature_names(model: Any) -> list[str]:
    """The feature columns a tabular model was trained with (``feature_names_``)."""
    names = getattr(model, "feature_names_", None)
    if names is None:
        raise ValueError("tabular model has no feature_names_; expected a fitted LandslideClassifier")
    return [str(n) for n in names]


def model_digest(model: Any | None) -> str:
    """The digest identifying a loaded model (tabular ``model_digest()``, segmenter ``digest``), or ``""``."""
    if model is None:
        return ""
    digest = getattr(model, "model_digest", None)
    if callable(digest):
        return str(digest())
    return str(getattr(model, "digest", "") or "")


def check_base_models(tabular_model: Any | None, segmenter: Any | None, fuser: Any | None) -> list[str]:
    """Problems with the base models: each one that is not the model of the fuser's base run.

    The fuser records the digests of its base runs' models (``meta_``); a model whose digest is
    known and differs is listed (the caller refuses, or warns with ``--allow-other-base-models``).
    """
    meta = getattr(fuser, "meta_", {}) if fuser is not None else {}
    problems = []
    want_tab = meta.get("tabular_model_digest")
    have_tab = model_digest(tabular_model)
    if tabular_model is not None and want_tab and have_tab and have_tab != want_tab:
        problems.append(
            f"--tabular-model (digest {have_tab[:12]}) is not the model of the fuser's tabular run "
            f"{meta.get('tabular_run_id', '?')} (digest {str(want_tab)[:12]})"
        )
    want_img = meta.get("imagery_model_digests") or []
    have_img = model_digest(segmenter)
    if segmenter is not None and want_img and have_img and have_img not in want_img:
        problems.append(
            f"--imagery-model (digest {have_img[:12]}) is not a model of the fuser's imagery run "
            f"{meta.get('imagery_run_id', '?')} (its folds: {', '.join(d[:12] for d in want_img)})"
        )
    return problems


def check_compatible(tabular_model: Any | None, segmenter: Any | None, fuser: Any | None) -> None:
    """Refuse models from incompatible runs: the fuser records the tabular feature columns and the
    imagery channel set of the runs it was fitted on (``meta_``); the models given must match."""
    meta = getattr(fuser, "meta_", {}) if fuser is not None else {}
    want_feats = meta.get("tabular_features")
    if tabular_model is not None and want_feats:
        have = tabular_feature_names(tabular_model)
        if list(want_feats) != have:
            extra = sorted(set(have) - set(want_feats))
            missing = sorted(set(want_feats) - set(have))
            raise UserError(
                f"incompatible models: the fusion model was fitted on tabular run {meta.get('tabular_run_id', '?')} "
                f"whose feature columns differ from --tabular-model (missing {missing[:5]}, extra {extra[:5]})"
            )
    want_cs = meta.get("imagery_channel_set")
    if segmenter is not None and want_cs is not None:
        have_cs = int(getattr(segmenter, "channel_set", want_cs))
        if int(want_cs) != have_cs:
            raise UserError(
                f"incompatible models: the fusion model was fitted on imagery run {meta.get('imagery_run_id', '?')} "
                f"with channel set {want_cs}; --imagery-model uses channel set {have_cs}"
            )


@dataclass(frozen=True)
class Models:
    """``tabular`` (a fitted ``LandslideClassifier``), ``segmenter`` and ``fuser`` (``StackingFuser``);
    ``None`` where not given. Unpacks as ``tab, seg, fus = models``."""

    tabular: Any | None = None
    segmenter: Any | None = None
    fuser: Any | None = None

    @classmethod
    def of(cls, value: Models | tuple[Any, Any, Any]) -> Models:
        """``value`` as :class:`Models` (a ``(tabular, segmenter, fuser)`` tuple is accepted)."""
        return value if isinstance(value, Models) else cls(*value)

    @classmethod
    def load(
        cls,
        tabular_model: str | None,
        imagery_model: str | None,
        fusion_model: str | None,
        *,
        runtime: str = "torch",
        device: str = "cpu",
        tracking_uri: str | None = None,
    ) -> Models:
        """The models behind the URIs given (``None``: not given); torch is imported only for an imagery model."""
        from fusion.stacking import load_fuser  # noqa: PLC0415 - scoring given models needs no MLflow loaders
        from tabular.serving import load_tabular_model  # noqa: PLC0415

        tab = seg = fus = None
        if tabular_model:
            tab = load_tabular_model(tabular_model, tracking_uri=tracking_uri, flag="--tabular-model")
        if imagery_model:
            from imagery.inference.serving import load_segmenter  # noqa: PLC0415 - torch only with an imagery model (fusion stays torch-free)

            seg = load_segmenter(
                imagery_model, device=device, tracking_uri=tracking_uri, flag="--imagery-model", runtime=runtime
            )
        if fusion_model:
            fus = load_fuser(fusion_model, tracking_uri=tracking_uri)
        return cls(tab, seg, fus)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.tabular, self.segmenter, self.fuser))

    def default_policy(self) -> str:
        """The decision policy when none is chosen (module docstring): ``stacked`` with a fuser, else
        ``any`` with both base models, else the one model given."""
        if self.fuser is not None:
            return "stacked"
        if self.tabular is not None and self.segmenter is not None:
            return "any"
        return "tabular" if self.tabular is not None else "imagery"

    def check(self, allow_other_base_models: bool = False) -> str:
        """Refuse models that do not belong together (``UserError``): feature columns or channel set unlike
        the fuser's base runs, or (unless ``allow_other_base_models``) base models that are not the fuser's
        own. Returns the warning to carry when other base models were allowed (``""``: none)."""
        if self.tabular is None and self.segmenter is None:
            raise UserError("scoring needs a tabular model, an imagery model, or both")
        check_compatible(self.tabular, self.segmenter, self.fuser)
        problems = check_base_models(self.tabular, self.segmenter, self.fuser)
        if problems and not allow_other_base_models:
            raise UserError(
                "incompatible models: "
                + "; ".join(problems)
                + " (use the base runs' models; pipelines.score_regions accepts others with --allow-other-base-models)"
            )
        return ("warning: " + "; ".join(problems)) if problems else ""

    def thresholds(self) -> dict[str, float]:
        """``{"tabular", "imagery", "fused"}`` decision thresholds (module docstring)."""
        base = dict(getattr(self.fuser, "base_thresholds_", {}) or {}) if self.fuser is not None else {}
        own_tab = getattr(self.tabular, "threshold_", None) or DEFAULT_THRESHOLD
        own_img = getattr(self.segmenter, "threshold", None) if self.segmenter is not None else None
        return {
            "tabular": float(base.get("tabular", own_tab)),
            "imagery": float(base.get("imagery", DEFAULT_THRESHOLD if own_img is None else own_img)),
            "fused": float(getattr(self.fuser, "threshold_", DEFAULT_THRESHOLD))
            if self.fuser is not None
            else DEFAULT_THRESHOLD,
        }

    def crosscheck_config(
        self, policy: str | None = None, imagery_weight: float = 0.5, weighted_threshold: float = 0.5
    ) -> CrosscheckConfig:
        """The cross-check of these models under ``policy`` (``None``: :meth:`default_policy`)."""
        policy = policy or self.default_policy()
        if policy == "stacked" and self.fuser is None:
            raise UserError("policy 'stacked' needs a fusion model (--fusion-model); or pick another --policy")
        t = self.thresholds()
        return CrosscheckConfig(
            policy=policy,
            tabular_threshold=t["tabular"],
            imagery_threshold=t["imagery"],
            fused_threshold=t["fused"],
            imagery_weight=imagery_weight,
            weighted_threshold=weighted_threshold,
        )


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


@dataclass(frozen=True)
class ChangeRule:
    """The change evidence of a region and the fused verdict of three evidences (module docstring).

    Defaults and why: ``min_flagged_share = 0.05``: on unchanged vegetated slopes the detector flags a few
    percent of the pixels (landslide-free blocks of the Sen12Landslides Emilia-Romagna patch: 0-2.4 % with
    8 + 7 acquisitions; one block at the patch's edge 17 % with the 3 + 4 of the 90/45-day default windows:
    few dates are noisier, widen the windows where there are few), regions over the patch's landslides 38-65 %;
    ``min_flagged_m2 = 1000``: ten 10 m pixels, above single-pixel noise and twice the smallest polygon
    ``map_event`` keeps; ``min_observed_share = 0.5``: "no change" needs the region mostly seen (as the
    tabular evidence needs half of a region covered).
    """

    min_flagged_share: float = 0.05
    min_flagged_m2: float = 1000.0
    min_observed_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_flagged_share", "min_observed_share"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if float(self.min_flagged_m2) < 0:
            raise UserError(f"min_flagged_m2 must be >= 0, got {self.min_flagged_m2!r}")

    def state(self, features: dict[str, Any]) -> tuple[str, str]:
        """``(state, reason)`` of one region from its ``chg_*`` features (:mod:`imagery.change.region`)."""
        share, m2 = _num(features.get("chg_flagged_share")), _num(features.get("chg_flagged_m2"))
        seen = _num(features.get("chg_observed_share"))
        pre, post = _num(features.get("chg_clear_pre")), _num(features.get("chg_clear_post"))
        d = _num(features.get("chg_dndvi_slope"))
        seen = 0.0 if math.isnan(seen) else seen
        views = f"clear views before/after {pre:.0f}/{post:.0f}" if not (math.isnan(pre) or math.isnan(post)) else ""
        if share == share and m2 == m2 and share >= self.min_flagged_share and m2 >= self.min_flagged_m2:
            slope = f", mean dNDVI on slopes {d:+.2f}" if d == d else ""
            return CHANGE, (
                f"change: vegetation loss on slopes since the event over {share:.0%} of the observed region "
                f"({m2:,.0f} m2{slope}; {seen:.0%} observed, {views})"
            )
        if seen >= self.min_observed_share and share == share:
            return NO_CHANGE, (
                f"no change: {share:.1%} of the observed region flagged (under {self.min_flagged_share:.0%} or "
                f"{self.min_flagged_m2:,.0f} m2; {seen:.0%} observed, {views})"
            )
        return CHANGE_UNKNOWN, f"change {CHANGE_UNKNOWN} ({seen:.0%} of the region seen clearly before and after)"

    def apply(self, rows: pd.DataFrame, change: pd.DataFrame) -> pd.DataFrame:
        """The fused rows of three evidences: ``rows`` (two-model rows of :meth:`fusion.scoring.RegionScorer.
        score_evidence`) with ``change`` (one row of ``chg_*`` features per region, same order) applied by the
        rule of the module docstring; adds ``change``, ``change_reason`` and the features."""
        out = rows.copy()
        verdicts = [self.state(r) for r in change.to_dict(orient="records")]
        states, reasons = [v[0] for v in verdicts], [v[1] for v in verdicts]
        decision = out["decision"].astype("Int64").copy()
        evidence = out["evidence"].astype(object).to_numpy().copy()
        reason = out["reason"].astype(object).to_numpy().copy()
        for i, (st, why) in enumerate(zip(states, reasons, strict=True)):
            before = decision.iloc[i]
            if st == CHANGE:
                if before is pd.NA or int(before) == 0:
                    why += "; the other evidence does not see it (check for logging, fire, or a scar the models miss)"
                decision.iloc[i] = 1
            elif st == NO_CHANGE:
                if before is pd.NA:
                    decision.iloc[i] = 0
                elif int(before) == 1:
                    why += "; a scar the models see may predate the event"
            if st != CHANGE_UNKNOWN:
                evidence[i] = "change_only" if evidence[i] == "none" else f"{evidence[i]}+change"
            reason[i] = f"{reason[i]}; {why}" if reason[i] else why
        out["decision"] = decision
        out["evidence"] = evidence
        out["reason"] = reason
        out["change"] = states
        out["change_reason"] = reasons
        for c in change.columns:
            out[c] = np.asarray(change[c].to_numpy(), dtype=np.float64)
        return out


__all__ = [
    "CHANGE",
    "CHANGE_UNKNOWN",
    "NO_CHANGE",
    "ChangeRule",
    "Models",
    "check_base_models",
    "check_compatible",
    "model_digest",
    "tabular_feature_names",
]
