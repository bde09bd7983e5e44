"""``PatchSet``: a set of image patches (and optional masks) in memory or memory-mapped.

The in-memory form every reader returns (L4S folders, the cache, synthetic patches) and every
training, evaluation and scoring step takes. Images are channel-first ``(N, C, H, W)``.

Masks are uint8: 0 background, 1 landslide, and :data:`IGNORE` (255) for pixels without a label
(georeferenced chips' ``--label-map ... :ignore``, padding, image nodata). Ignored pixels count in
neither a loss (``imagery.training.losses``) nor a metric (``imagery.inference.metrics``, the
threshold sweep). L4S files never hold ignored pixels (their 255 means landslide and is read as 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from common.cli import UserError
from imagery.data.bands import BANDS

#: Mask value of an unlabelled pixel: excluded from every loss and metric.
IGNORE = 255


@dataclass
class PatchSet:
    """A set of L4S patches in memory (or memory-mapped).

    Attributes:
        images: ``(N, len(bands), H, W)`` float32 (or float16 from a float16 cache), the bands ``bands`` in
            :data:`imagery.data.bands.BANDS` order, L4S model units (pre-scaled values).
        masks: ``(N, H, W)`` uint8 0/1 (:data:`IGNORE` = unlabelled), or ``None`` for unlabelled data.
        ids: ``(N,)`` int64 patch ids (the ``N`` of ``image_N.h5``).
        paths: the N source image paths (strings).
        bands: the band names of ``images`` (default the 14 L4S bands).
        groups: optional ``(N,)`` int64 group per patch (tiles cut from one chip share a group, so a
            validation split never holds tiles of a chip that is also trained on).
        gsd_m: ground sampling distance of the patches, m per pixel (10 for L4S and the synthetic patches; a
            chip folder's own pixel size), stored with a model trained on them.
        channel_norm: ``{band: {"mean": m, "std": s}}`` a dataset's norm statistics already applied to temporal
            channels (``imagery.data.sen12_temporal``; empty: none), stored with a model trained on them so
            inference builds its channels the same way.
    """

    images: np.ndarray
    masks: np.ndarray | None
    ids: np.ndarray
    paths: list[str] = field(default_factory=list)
    bands: tuple[str, ...] = BANDS
    groups: np.ndarray | None = None
    gsd_m: float = 10.0
    channel_norm: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"PatchSet.images must be (N, C, H, W), got shape {self.images.shape}")
        n = self.images.shape[0]
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if self.ids.shape != (n,):
            raise ValueError(f"PatchSet.ids must have shape ({n},), got {self.ids.shape}")
        if self.masks is not None and self.masks.shape != (n, *self.images.shape[2:]):
            raise ValueError(f"PatchSet.masks must have shape {(n, *self.images.shape[2:])}, got {self.masks.shape}")
        if self.paths and len(self.paths) != n:
            raise ValueError(f"PatchSet.paths must have {n} entries, got {len(self.paths)}")
        self.bands = tuple(self.bands)
        if len(self.bands) != self.images.shape[1]:
            raise ValueError(f"PatchSet.bands names {len(self.bands)} bands, images have {self.images.shape[1]}")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (n,):
                raise ValueError(f"PatchSet.groups must have shape ({n},), got {self.groups.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def subset(self, idx: Sequence[int] | np.ndarray) -> PatchSet:
        """The patches at positions ``idx`` (integer positions or a boolean mask), loaded into memory."""
        sel = np.asarray(idx)
        if sel.dtype == bool:
            sel = np.flatnonzero(sel)
        sel = sel.astype(np.int64)
        return PatchSet(
            images=np.asarray(self.images[sel]),
            masks=None if self.masks is None else np.asarray(self.masks[sel]),
            ids=self.ids[sel],
            paths=[self.paths[i] for i in sel] if self.paths else [],
            bands=self.bands,
            groups=None if self.groups is None else self.groups[sel],
            gsd_m=self.gsd_m,
            channel_norm=self.channel_norm,
        )

    def select_bands(self, bands: Sequence[str]) -> PatchSet:
        """The same patches holding only ``bands`` (canonical names, a subset of ``self.bands``), in that order.

        :class:`common.cli.UserError` names the bands the data lacks.
        """
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise UserError(
                f"--bands {','.join(bands)}: the data has no {', '.join(missing)} (it holds {', '.join(self.bands)})"
            )
        if tuple(bands) == self.bands:
            return self
        idx = [self.bands.index(b) for b in bands]
        return PatchSet(
            images=np.asarray(self.images[:, idx]),
            masks=self.masks,
            ids=self.ids,
            paths=self.paths,
            bands=tuple(bands),
            groups=self.groups,
            gsd_m=self.gsd_m,
            channel_norm=self.channel_norm,
        )

    def select_ids(self, ids: Sequence[int] | np.ndarray) -> PatchSet:
        """The patches with the given ids (in that order); ``ValueError`` naming unknown ids."""
        pos = {int(v): i for i, v in enumerate(self.ids)}
        missing = [int(v) for v in ids if int(v) not in pos]
        if missing:
            raise UserError(f"patch ids not in this set: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return self.subset([pos[int(v)] for v in ids])

    def nonfinite_share(self, chunk: int = 256) -> float:
        """Share of NaN/Inf values in the images (cleaning replaces them; logged as ``nonfinite_share``)."""
        bad = sum(int(np.count_nonzero(~np.isfinite(self.images[i : i + chunk]))) for i in range(0, len(self), chunk))
        return bad / max(1, int(np.prod(self.images.shape)))

    def patch_labels(self) -> np.ndarray:
        """``(N,)`` int64: 1 where the patch's mask has any landslide pixel (ignored pixels are not landslide)."""
        if self.masks is None:
            raise UserError("this PatchSet has no masks, so it has no patch labels")
        return (np.asarray(self.masks).reshape(len(self), -1) == 1).any(axis=1).astype(np.int64)
