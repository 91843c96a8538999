"""Negatives for the sigmoid known-class head.

The honest default builds negatives from the known training digits of each batch only
(``synthetic``); no image of an unknown class is involved. Each kind is a function
``(images, labels, generator) -> images`` working on a whole batch; ``characters`` draws letters and symbols of
stroke fonts instead (``openset.characters``), never a digit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from openset.augment import augment
from openset.config import AugmentConfig, NegativesConfig

Kind = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _partner(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For every sample, the index of a random sample of another class (self where impossible)."""
    perm = torch.randperm(len(labels), generator=gen)
    same = labels[perm] == labels
    # Retry a few times; the rare remainder keeps a same-class partner, which still gives a
    # malformed digit for recombine and a blur for mixup.
    for _ in range(3):
        if not same.any():
            break
        retry = torch.randint(len(labels), (int(same.sum()),), generator=gen)
        perm[same] = retry
        same = labels[perm] == labels
    return perm


def recombine(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One part of a digit joined to the rest of a digit of another class (cut by a row or a column)."""
    n, side = len(images), images.shape[-1]  # the proportions are MNIST's 28 x 28 ones
    other = images[_partner(labels, gen)]
    cut = torch.randint(side * 10 // 28, side * 19 // 28, (n, 1), generator=gen)
    mask = (torch.arange(side)[None, :] < cut).float()  # [n, side]
    by_row = torch.rand(n, generator=gen) < 0.5
    mask = torch.where(by_row[:, None, None], mask[:, :, None], mask[:, None, :]).expand(n, side, side)
    return images * mask[:, None] + other * (1 - mask[:, None])


def erase(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A digit with a large block of its centre blanked out."""
    n, side = len(images), images.shape[-1]  # the proportions are MNIST's 28 x 28 ones
    size = torch.randint(side * 9 // 28, side * 15 // 28, (n, 2), generator=gen)
    corner = side * 4 // 28 + (torch.rand(n, 2, generator=gen) * (side * 20 // 28 - size)).long()
    grid = torch.arange(side)
    rows = (grid[None] >= corner[:, :1]) & (grid[None] < corner[:, :1] + size[:, :1])
    cols = (grid[None] >= corner[:, 1:]) & (grid[None] < corner[:, 1:] + size[:, 1:])
    block = (rows[:, :, None] & cols[:, None, :]).float()
    return images * (1 - block[:, None])


def mixup(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Two digits of different classes blended half and half (pixel-wise max of their mix)."""
    lam = _uniform(len(images), 0.4, 0.6, gen)[:, None, None, None]
    other = images[_partner(labels, gen)]
    return torch.maximum(lam * images + (1 - lam) * other, torch.maximum(images, other) * 0.7)


def noise(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform noise, half of it smoothed into blobs and strokes-like texture."""
    n = len(images)
    raw = torch.rand(images.shape, generator=gen) * _uniform(n, 0.3, 1.0, gen)[:, None, None, None]
    smooth = F.avg_pool2d(raw, 5, stride=1, padding=2)
    smooth = (smooth - smooth.amin((2, 3), keepdim=True)) / smooth.amax((2, 3), keepdim=True).clamp_min(1e-6)
    pick = (torch.rand(n, generator=gen) < 0.5)[:, None, None, None]
    return torch.where(pick, raw, smooth)


def flip(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A digit turned by 90 or 270 degrees, which no digit 0-9 survives as itself."""
    quarter = torch.rot90(images, 1, (2, 3))
    return torch.where((torch.rand(len(images), generator=gen) < 0.5)[:, None, None, None],
                       quarter, quarter.flip(2, 3))


MIRROR_OVERLAP = 0.55  # intersection over union of the ink above which a mirrored digit counts as itself


def mirror(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A digit mirrored left-right or top-bottom: a shape made of a known digit's strokes that no known digit
    writes. Where the mirror image still covers the digit itself (a 0, a 1, a 3 turned over), it is turned a
    quarter instead."""
    flipped = torch.where((torch.rand(len(images), generator=gen) < 0.5)[:, None, None, None],
                          images.flip(3), images.flip(2))
    # Ink widened by a pixel each way, so that a slightly shifted or thinner copy of a stroke still overlaps it.
    ink, flipped_ink = (F.max_pool2d(x, 3, 1, 1) > 0.3 for x in (images, flipped))
    overlap = (ink & flipped_ink).sum((1, 2, 3)) / (ink | flipped_ink).sum((1, 2, 3)).clamp_min(1)
    return torch.where((overlap > MIRROR_OVERLAP)[:, None, None, None], flip(images, labels, gen), flipped)


def character_kind(bank: torch.Tensor, augment_cfg: AugmentConfig | None) -> Kind:
    """Letters and symbols of stroke fonts (``openset.characters.glyph_bank``), changed as the batch's digits are:
    outlier exposure with characters that are not digits."""
    def draw(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        picks = bank[torch.randint(len(bank), (len(images),), generator=gen)]
        return augment(picks, augment_cfg, gen) if augment_cfg is not None else picks

    return draw


KINDS: dict[str, Kind] = {
    "recombine": recombine,
    "erase": erase,
    "mixup": mixup,
    "noise": noise,
    "flip": flip,
    "mirror": mirror,
}


class NegativeSampler:
    """Draws ``ratio * batch`` negatives per batch from the configured source.

    ``pool`` holds the images for ``auxiliary:*`` and ``supervised`` sources; ``glyphs`` the glyph bank of the
    ``characters`` kind, changed by ``augment_cfg`` (None: as drawn).
    """

    def __init__(self, cfg: NegativesConfig, pool: torch.Tensor | None = None, glyphs: torch.Tensor | None = None,
                 augment_cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg
        self.pool = pool
        kind = cfg.source.partition(":")[0]
        if kind in ("auxiliary", "supervised") and (pool is None or len(pool) == 0):
            raise ValueError(f"negative source {cfg.source!r} needs a pool of images")
        if kind == "synthetic" and "characters" in cfg.kinds and glyphs is None:
            raise ValueError("the characters kind of negatives needs a glyph bank")
        kinds = KINDS if glyphs is None else {**KINDS, "characters": character_kind(glyphs, augment_cfg)}
        self.kinds = [kinds[k] for k in cfg.kinds] if kind == "synthetic" else []

    @property
    def enabled(self) -> bool:
        return self.cfg.source != "none"

    def sample(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        count = max(1, round(self.cfg.ratio * len(images)))
        if self.pool is not None:
            return self.pool[torch.randint(len(self.pool), (count,), generator=gen)]
        picks = torch.randint(len(images), (count,), generator=gen)
        which = torch.randint(len(self.kinds), (count,), generator=gen)
        out = torch.empty(count, *images.shape[1:])
        for k, kind in enumerate(self.kinds):
            sel = torch.nonzero(which == k).squeeze(1)
            if len(sel):
                out[sel] = kind(images[picks[sel]], labels[picks[sel]], gen)
        return out
