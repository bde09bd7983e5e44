"""Batched, seeded augmentation on the device holding the batch.

All random draws come from ``generator`` (a ``torch.Generator``, usually on the CPU); the
draws are small per-sample tensors moved to the batch's device, so the same generator seed
gives the same output on any device. Images and masks are transformed together.

Per sample: with probability ``p`` a 90/180/270-degree rotation (uniform, the seed's rule);
flips: horizontal and vertical, each with probability 0.5; ``rotate_any``: with probability
``p`` a rotation by an angle uniform in [-max_angle, max_angle] degrees (bilinear for images,
nearest for masks, reflection padding for both); ``cutmix``: with probability ``p`` a box of
10-50% of the area is cut from another sample of the batch into the same place of the image
and of the mask (``cutmix_mode="box"``), or the batch donor's landslide pixels are pasted wherever
its mask is 1 and the masks are OR-ed (``cutmix_mode="mask"``; the donor is a random batch member,
possibly the sample itself or a patch without landslide: about 0.35 effective pastes per sample).

``cutmix_mode="study"`` is the seed study's CutMix (the authors' data generator): per sample, after its
rotation, draw n uniformly from {0, 1, 2}; n times, pick a donor uniformly from the landslide-positive
training patches (a :class:`DonorPool`, not the batch; the donor is neither rotated nor shifted) and
replace the sample's pixels, all channels, wherever the donor mask is 1; the new mask is the OR of the
two. One paste per sample on average, every paste carries landslide pixels. ``p`` does not apply. The
draws are made for every sample whatever its n (n, then the first and the second donor index), so the
random stream does not depend on the outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

CutmixMode = Literal["study", "mask", "box"]
CUTMIX_MODES: tuple[str, ...] = get_args(CutmixMode)
#: The study's CutMix pastes 0, 1 or 2 donors per sample (uniformly).
STUDY_MAX_PASTES = 2


@dataclass(frozen=True)
class DonorPool:
    """Where the study's CutMix takes its donors: ``images`` ``(N, C, H, W)``, ``masks`` ``(N, H, W)`` (the
    training set, un-augmented) and ``index`` ``(M,)`` long, the positions of the patches holding at least one
    landslide pixel (:meth:`from_training`). Tensors stay where they are (a resident training set on the GPU)."""

    images: torch.Tensor
    masks: torch.Tensor
    index: torch.Tensor

    @classmethod
    def from_training(cls, images: torch.Tensor, masks: torch.Tensor) -> DonorPool:
        """The pool of the landslide-positive patches of a training set."""
        positive = (masks == 1).flatten(1).any(dim=1)
        return cls(images, masks, positive.nonzero(as_tuple=True)[0].to(masks.device))

    def __len__(self) -> int:
        return int(self.index.numel())


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"augment_batch images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"augment_batch masks must be {(images.shape[0], *images.shape[2:])}, got {tuple(masks.shape)}"
        )


def _rot90(images: torch.Tensor, masks: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out_i, out_m = images.clone(), masks.clone()
    for q in (1, 2, 3):
        sel = (k == q).nonzero(as_tuple=True)[0]
        if sel.numel():
            out_i[sel] = torch.rot90(images[sel], q, dims=(-2, -1))
            out_m[sel] = torch.rot90(masks[sel], q, dims=(-2, -1))
    return out_i, out_m


def _flip(images: torch.Tensor, masks: torch.Tensor, do: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip the samples where ``do`` along ``dim`` (-1 = width, -2 = height; negative, so it
    names the same spatial axis of ``(B, C, H, W)`` images and ``(B, H, W)`` masks)."""
    sel_i = do.view(-1, 1, 1, 1)
    sel_m = do.view(-1, 1, 1)
    return (
        torch.where(sel_i, images.flip(dim), images),
        torch.where(sel_m, masks.flip(dim), masks),
    )


def _rotate_any(
    images: torch.Tensor, masks: torch.Tensor, angles_deg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    theta_r = angles_deg * math.pi / 180.0
    cos, sin = torch.cos(theta_r), torch.sin(theta_r)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(
        theta.to(images.dtype if images.is_floating_point() else torch.float32), list(images.shape), align_corners=False
    )
    img = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    m = F.grid_sample(masks.unsqueeze(1).float(), grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return img.to(images.dtype), m.squeeze(1).round().to(masks.dtype)


def _cutmix_box(
    images: torch.Tensor, masks: torch.Tensor, do: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    b, _, h, w = images.shape
    dev = images.device
    donor = torch.randperm(b, generator=generator).to(dev)
    area = 0.1 + 0.4 * _rand(b, generator, dev)
    aspect = torch.exp((_rand(b, generator, dev) - 0.5) * math.log(4.0))  # in [1/2, 2]
    bh = (torch.sqrt(area * aspect) * h).clamp(1, h).floor()
    bw = (torch.sqrt(area / aspect) * w).clamp(1, w).floor()
    y0 = ((h - bh) * _rand(b, generator, dev)).floor()
    x0 = ((w - bw) * _rand(b, generator, dev)).floor()
    yy = torch.arange(h, device=dev).view(1, h, 1)
    xx = torch.arange(w, device=dev).view(1, 1, w)
    box = (
        (yy >= y0.view(-1, 1, 1))
        & (yy < (y0 + bh).view(-1, 1, 1))
        & (xx >= x0.view(-1, 1, 1))
        & (xx < (x0 + bw).view(-1, 1, 1))
        & do.view(-1, 1, 1)
    )
    new_i = torch.where(box.unsqueeze(1), images[donor], images)
    new_m = torch.where(box, masks[donor], masks)
    return new_i, new_m


def _cutmix_mask(
    images: torch.Tensor, masks: torch.Tensor, do: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    donor = torch.randperm(images.shape[0], generator=generator).to(images.device)
    paste = (masks[donor] == 1) & do.view(-1, 1, 1)
    new_i = torch.where(paste.unsqueeze(1), images[donor], images)
    new_m = torch.where(paste, masks[donor], masks)
    return new_i, new_m


def cutmix_study(
    images: torch.Tensor,
    masks: torch.Tensor,
    pool: DonorPool,
    generator: torch.Generator,
    max_pastes: int = STUDY_MAX_PASTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed study's CutMix (module docstring): ``images`` ``(B, C, H, W)``, ``masks`` ``(B, H, W)`` -> new ones.

    An empty pool (no landslide-positive training patch) pastes nothing.
    """
    b, dev = images.shape[0], images.device
    n = torch.randint(0, max_pastes + 1, (b,), generator=generator)
    if len(pool) == 0 or b == 0:
        return images, masks
    picks = torch.randint(0, len(pool), (max_pastes, b), generator=generator)
    for j in range(max_pastes):
        do = (n > j).to(dev)
        if not bool(do.any()):
            continue
        pos = pool.index[picks[j].to(pool.index.device)]
        donor_x = pool.images.index_select(0, pos).to(dev, images.dtype)
        donor_y = pool.masks.index_select(0, pos).to(dev)
        paste = (donor_y == 1) & do.view(-1, 1, 1)
        images = torch.where(paste.unsqueeze(1), donor_x, images)
        masks = torch.where(paste, torch.ones_like(masks), masks)
    return images, masks


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    *,
    rot90: bool = True,
    flip: bool = True,
    rotate_any: bool = False,
    cutmix: bool = False,
    p: float = 0.7,
    max_angle: float = 180.0,
    cutmix_mode: str = "box",
    donors: DonorPool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch; returns new ``(images (B, C, H, W), masks (B, H, W))`` on the same device.

    Square patches are required for ``rot90``; ``cutmix_mode="study"`` needs ``donors``. See the module
    docstring for the rules.
    """
    _check(images, masks)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
    if cutmix_mode not in CUTMIX_MODES:
        raise ValueError(f"cutmix_mode must be one of {', '.join(CUTMIX_MODES)}, got {cutmix_mode!r}")
    if cutmix and cutmix_mode == "study" and donors is None:
        raise ValueError("cutmix_mode='study' pastes from the training set's landslide patches: pass donors=")
    b = images.shape[0]
    dev = images.device
    if b == 0:
        return images, masks
    if rot90:
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"rot90 needs square patches, got {tuple(images.shape[-2:])}")
        apply = _rand(b, generator, dev) < p
        k = torch.randint(1, 4, (b,), generator=generator).to(dev) * apply
        images, masks = _rot90(images, masks, k)
    if flip:
        images, masks = _flip(images, masks, _rand(b, generator, dev) < 0.5, dim=-1)
        images, masks = _flip(images, masks, _rand(b, generator, dev) < 0.5, dim=-2)
    if rotate_any:
        apply = _rand(b, generator, dev) < p
        angles = (2 * _rand(b, generator, dev) - 1) * max_angle * apply
        images, masks = _rotate_any(images, masks, angles)
    if cutmix and cutmix_mode == "study":
        images, masks = cutmix_study(images, masks, donors, generator)  # type: ignore[arg-type]
    elif cutmix and b > 1:
        do = _rand(b, generator, dev) < p
        fn: Any = _cutmix_box if cutmix_mode == "box" else _cutmix_mask
        images, masks = fn(images, masks, do, generator)
    return images, masks
