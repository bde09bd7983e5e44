"""Per-pixel fusion of the training-free change score with a susceptibility map and a segmenter (``map_event``).

Without labelled events to fit a stacker on, the rule is Bayesian prior replacement, tempered:

    logit(p) = logit(score) + weight * (logit(susceptibility) - logit(prior))

* ``score``: the change detector's 0..1 score (``imagery.change.detector.change_score``), read as the
  probability of a landslide given the change evidence under an average prior;
* ``susceptibility``: the local prior from ``predict_tabular --raster-out`` (0..1); ``prior`` is the average
  prior the score assumes (default 0.5: a susceptibility of 0.5 leaves the score unchanged, above raises it,
  below lowers it);
* ``weight`` (default 0.5) tempers the susceptibility's influence: 1 is full Bayes with the susceptibility as
  the prior, 0 ignores it. A half weight reflects that susceptibility maps are calibrated on past
  inventories, not on this event, and that change evidence should dominate after a trigger.

Where the susceptibility is NaN (outside its raster) the score passes unchanged; where the score is NaN
(unobserved) the result is NaN. Probabilities are clipped to [1e-4, 1 - 1e-4] before the logits. No torch.

**With a segmenter** (``map_event --imagery-model``) its landslide probability ``p_segmenter`` is a second piece of
evidence, added in logit space as a tempered likelihood ratio against an uninformative 0.5:

    logit(p) = logit(score) + weight * (logit(susceptibility) - logit(prior)) + segmenter_weight * logit(p_segmenter)

* ``segmenter_weight`` (default 0.5, ``--segmenter-weight``): naive Bayes would add the segmenter's full logit (1),
  but it and the change detector look at the same bare scar in the same post-event image, so their evidence is
  correlated; half a logit avoids counting the scar twice, and keeps a segmenter that never saw this region from
  overruling the change evidence (a segmenter at 0.9 moves a score of 0.5 to 0.75, at 0.1 to 0.25). 0 ignores it.
* Where ``p_segmenter`` is NaN (a tile the segmenter gate skipped, ``imagery.change.segmenter``, or an unobserved
  pixel) the term is 0: no evidence, the change score (and susceptibility) stand alone.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-4


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def fuse_change(
    score: np.ndarray,
    susceptibility: np.ndarray | None = None,
    *,
    weight: float = 0.5,
    prior: float = 0.5,
    p_segmenter: np.ndarray | None = None,
    segmenter_weight: float = 0.5,
) -> np.ndarray:
    """The fused probability (module docstring), float32 of ``score``'s shape."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in 0..1, got {weight}")
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    if not 0.0 <= segmenter_weight <= 1.0:
        raise ValueError(f"segmenter_weight must be in 0..1, got {segmenter_weight}")
    s = np.asarray(score, dtype=np.float32)
    if susceptibility is None and p_segmenter is None:
        return s.copy()
    z = _logit(s)
    if susceptibility is not None:
        sus = np.asarray(susceptibility, dtype=np.float64)
        z = z + weight * (_logit(np.where(np.isfinite(sus), sus, prior)) - _logit(np.array(prior)))
    if p_segmenter is not None:
        seg = np.asarray(p_segmenter, dtype=np.float64)
        z = z + segmenter_weight * _logit(np.where(np.isfinite(seg), seg, 0.5))
    out = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    out[~np.isfinite(s)] = np.nan
    return out
