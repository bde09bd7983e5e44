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

The models are duck-typed (see :mod:`fusion.scoring`), so this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from common.errors import UserError
from fusion.crosscheck import CrosscheckConfig

DEFAULT_THRESHOLD = 0.5


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


__all__ = ["Models", "check_base_models", "check_compatible", "model_digest", "tabular_feature_names"]
