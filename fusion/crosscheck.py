"""Cross-check of the tabular and imagery probabilities per region: agreement, reasons, decisions.

Inputs per region: ``p_tabular`` and ``p_imagery`` (floats in [0, 1]; NaN = that modality has no
evidence for the region, e.g. no image), each model's own decision threshold, and optionally the
stacker's fused probability ``p_fused``.

Outputs (one row per region):

* ``evidence``: ``both`` | ``tabular_only`` | ``imagery_only`` | ``none``
* ``agree``: whether both models take the same side of their thresholds (``<NA>`` unless ``both``)
* ``decision``: 0/1 under the chosen policy; empty (``<NA>``) when the evidence is ``none``: unknown,
  never "no landslide"
* ``reason``: one sentence; on disagreement it says which model sees what

Policies (:data:`POLICIES`):

* ``stacked``: ``p_fused >= fused_threshold`` (the meta-model of :mod:`fusion.stacking`)
* ``tabular`` / ``imagery``: that model's own decision
* ``any``: positive when either model is positive; ``both``: only when both are
* ``weighted``: ``w * p_imagery + (1 - w) * p_tabular >= weighted_threshold`` (``w`` = ``imagery_weight``)

Missing modality: every policy falls back to the model that has evidence (its own decision and its
probability as ``p_fused``), and ``evidence``/``reason`` say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from common.errors import UserError
from fusion.choices import POLICIES, Policy  # noqa: F401 - re-exported: declared once in fusion.choices

Evidence = Literal["both", "tabular_only", "imagery_only", "none"]
EVIDENCE_LEVELS: tuple[str, ...] = get_args(Evidence)


@dataclass(frozen=True)
class CrosscheckConfig:
    """Thresholds of the cross-check (all probabilities in [0, 1])."""

    policy: str = "stacked"
    tabular_threshold: float = 0.5
    imagery_threshold: float = 0.5
    fused_threshold: float = 0.5
    imagery_weight: float = 0.5
    weighted_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in (
            "tabular_threshold",
            "imagery_threshold",
            "fused_threshold",
            "imagery_weight",
            "weighted_threshold",
        ):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {value!r}")


def _as_prob(name: str, values: np.ndarray | pd.Series | list[float], n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {n}")
    finite = arr[~np.isnan(arr)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0 or np.isinf(finite).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1] (NaN = missing), got values outside")
    return arr


def evidence_of(p_tabular: np.ndarray, p_imagery: np.ndarray) -> np.ndarray:
    """Per region ``both`` / ``tabular_only`` / ``imagery_only`` / ``none`` from which values are NaN."""
    has_t = ~np.isnan(p_tabular)
    has_i = ~np.isnan(p_imagery)
    return np.select(
        [has_t & has_i, has_t, has_i],
        ["both", "tabular_only", "imagery_only"],
        default="none",
    ).astype(object)


def _reason(ev: str, tp: bool, ip: bool, pt: float, pi: float, area_m2: float) -> str:
    if ev == "none":
        return "no evidence: neither a tabular row nor an image"
    if ev == "tabular_only":
        side = "favour a landslide" if tp else "make one unlikely"
        return f"no image: tabular model only; terrain and rainfall {side} (p_tabular={pt:.2f})"
    if ev == "imagery_only":
        side = "sees a scar" if ip else "sees no scar"
        return f"no tabular row: imagery only; imagery {side} (p_imagery={pi:.2f})"
    scar = f", largest {area_m2:,.0f} m2" if area_m2 == area_m2 and area_m2 > 0 else ""
    if tp and ip:
        return f"both see a landslide (p_tabular={pt:.2f}, p_imagery={pi:.2f}{scar})"
    if not tp and not ip:
        return f"neither sees a landslide (p_tabular={pt:.2f}, p_imagery={pi:.2f})"
    if ip:
        return (
            f"imagery sees a scar (p_imagery={pi:.2f}{scar}), "
            f"terrain and rainfall make one unlikely (p_tabular={pt:.2f})"
        )
    return (
        f"terrain and rainfall favour a landslide (p_tabular={pt:.2f}), "
        f"imagery sees no scar (p_imagery={pi:.2f}; clouds or an old/small scar?)"
    )


def crosscheck(
    p_tabular: np.ndarray | pd.Series | list[float],
    p_imagery: np.ndarray | pd.Series | list[float],
    config: CrosscheckConfig = CrosscheckConfig(),
    p_fused: np.ndarray | pd.Series | list[float] | None = None,
    scar_area_m2: np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """Cross-check both models for N regions; see the module docstring for the columns and policies.

    ``p_fused`` (N,) is required for ``policy="stacked"``; when not given, ``p_fused`` in the output
    is the weighted average (``imagery_weight``) where both exist, else the available probability.
    ``scar_area_m2`` (N,) (largest connected landslide component, m²) is only quoted in reasons.
    """
    pt = _as_prob("p_tabular", p_tabular)
    n = pt.shape[0]
    pi = _as_prob("p_imagery", p_imagery, n)
    ev = evidence_of(pt, pi)
    has_t, has_i = ~np.isnan(pt), ~np.isnan(pi)
    tab_pos = has_t & (np.nan_to_num(pt, nan=0.0) >= config.tabular_threshold)
    img_pos = has_i & (np.nan_to_num(pi, nan=0.0) >= config.imagery_threshold)
    w = config.imagery_weight
    weighted = np.where(has_t & has_i, w * pi + (1 - w) * pt, np.where(has_t, pt, pi))
    if p_fused is None:
        if config.policy == "stacked":
            raise ValueError("policy 'stacked' needs p_fused (a fitted StackingFuser); use another --policy")
        pf = weighted
    else:
        pf = _as_prob("p_fused", p_fused, n)
        pf = np.where(np.isnan(pf), np.where(has_t, pt, pi), pf)

    both = has_t & has_i
    policy = config.policy
    if policy == "tabular":
        dec_both = tab_pos
    elif policy == "imagery":
        dec_both = img_pos
    elif policy == "any":
        dec_both = tab_pos | img_pos
    elif policy == "both":
        dec_both = tab_pos & img_pos
    elif policy == "weighted":
        dec_both = np.nan_to_num(weighted, nan=0.0) >= config.weighted_threshold
    else:  # stacked
        dec_both = np.nan_to_num(pf, nan=0.0) >= config.fused_threshold
    if policy == "stacked":
        # the stacker has its own single-modality fallbacks, so its probability decides everywhere
        decision = np.where(has_t | has_i, dec_both, False)
    else:
        decision = np.where(both, dec_both, np.where(has_t, tab_pos, img_pos))

    decision = pd.array(decision.astype(np.int64), dtype="Int64")
    decision[~(has_t | has_i)] = pd.NA  # no evidence: unknown, never "no landslide"
    agree = pd.array(np.where(both, tab_pos == img_pos, False), dtype="boolean")
    agree[~both] = pd.NA
    area = np.full(n, np.nan) if scar_area_m2 is None else np.asarray(scar_area_m2, dtype=np.float64).reshape(-1)
    reasons = [
        _reason(e, bool(a), bool(b), float(x), float(y), float(z))
        for e, a, b, x, y, z in zip(ev, tab_pos, img_pos, pt, pi, area, strict=True)
    ]
    return pd.DataFrame(
        {
            "p_tabular": pt,
            "p_imagery": pi,
            "p_fused": pf,
            "evidence": ev,
            "agree": agree,
            "decision": decision,
            "reason": reasons,
        }
    )
