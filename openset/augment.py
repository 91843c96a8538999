"""Augmentation of the known training digits: the ways a person's digit differs from an MNIST one.

Every change is drawn per sample on a whole batch (float ``[N, 1, side, side]`` in [0, 1], white on black):
pen width (grey dilation or erosion at twice the resolution), blur, rotation, shear, per-axis scale,
shift, and a smooth elastic warp (another writer's hand; Simard et al. 2003). Then, as the service's
preprocessing does for a real picture, the digit is put back into MNIST's layout: its ink box scaled to
fit 20x20 (of 28x28; other sides in proportion), its centre of mass at the centre. So the model learns from what
the service will show it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from openset.config import AugmentConfig
from openset.contract import layout

INK = 0.3  # a pixel counts towards the ink box from this intensity on (the service uses Otsu's threshold)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < p)[:, None, None, None]


def _dilate(images: torch.Tensor) -> torch.Tensor:
    """Grey dilation by a 3x3 square, as two 3-pixel maxima (separable; faster than max_pool2d on the CPU)."""
    x = F.pad(images, (1, 1, 0, 0))
    x = torch.maximum(torch.maximum(x[..., :-2], x[..., 1:-1]), x[..., 2:])
    x = F.pad(x, (0, 0, 1, 1))
    return torch.maximum(torch.maximum(x[..., :-2, :], x[..., 1:-1, :]), x[..., 2:, :])


def pen_width(images: torch.Tensor, max_px: float, p: float, gen: torch.Generator) -> torch.Tensor:
    """For a share ``p`` of the batch, strokes up to ``max_px`` MNIST pixels thicker or half a pixel thinner
    (grey dilation or erosion in half-pixel steps at twice the resolution), then back to full contrast as the
    service shows them. Thinner than that, MNIST's thinnest strokes would vanish."""
    steps = int(round(2 * max_px))
    step = torch.randint(-1, steps + 1, (len(images),), generator=gen) * _chosen(len(images), p, gen).view(-1)
    out = images.clone()
    changed = torch.nonzero(step).view(-1)
    if not len(changed):
        return out
    big = F.interpolate(images[changed], scale_factor=2, mode="bilinear", align_corners=False)
    step = step[changed][:, None, None, None]
    result = torch.where(step == -1, -_dilate(-big), big)
    grown = big
    for k in range(1, steps + 1):
        grown = _dilate(grown)
        result = torch.where(step == k, grown, result)
    result = F.avg_pool2d(result, 2)
    out[changed] = result / result.amax((2, 3), keepdim=True).clamp_min(0.05)
    return out


def blur(images: torch.Tensor, max_sigma: float, p: float, gen: torch.Generator) -> torch.Tensor:
    """A Gaussian blur of sigma up to ``max_sigma`` pixels for a share ``p`` of the batch, then re-stretched to
    full contrast (the service rescales blurred strokes to full strength too)."""
    n = len(images)
    sigma = _uniform(n, 0.3, max_sigma, gen).clamp_min(1e-3)
    radius = max(1, math.ceil(2 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # [N, K], separable
    x = images.view(1, n, *images.shape[-2:])
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), kernel[:, None, None, :], groups=n)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), kernel[:, None, :, None], groups=n).view_as(images)
    x = x / x.amax((2, 3), keepdim=True).clamp_min(1e-3)
    return torch.where(_chosen(n, p, gen), x, images)


def warp(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Rotation, shear, per-axis scale, shift and an elastic field, in one resampling."""
    n, half = len(images), images.shape[-1] / 2  # pixels per unit of affine_grid's coordinates
    angle = _uniform(n, -cfg.rotate, cfg.rotate, gen) * math.pi / 180
    shear = _uniform(n, -cfg.shear, cfg.shear, gen)
    scale = _uniform(2 * n, cfg.scale[0], cfg.scale[1], gen).view(n, 2)
    shift = _uniform(2 * n, -cfg.shift / half, cfg.shift / half, gen).view(n, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear_m = torch.stack([torch.stack([torch.ones(n), shear], 1), torch.stack([torch.zeros(n), torch.ones(n)], 1)], 1)
    forward = rotate @ shear_m @ torch.diag_embed(scale)
    theta = torch.cat([torch.linalg.inv(forward), shift[:, :, None]], 2)  # output -> input coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if cfg.elastic:
        coarse = torch.rand(n, 2, 4, 4, generator=gen) * 2 - 1
        field = F.interpolate(coarse, size=images.shape[-2:], mode="bicubic", align_corners=True)
        field = field * (cfg.elastic / half) * _chosen(n, cfg.elastic_p, gen)
        grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def to_mnist_layout(images: torch.Tensor) -> torch.Tensor:
    """Each digit's ink box scaled to fit MNIST's box (20x20 of 28x28, aspect kept) and its centre of mass moved to
    the centre."""
    n, side = len(images), images.shape[-1]
    box = layout(side)["box"]
    ink = images[:, 0] > INK
    coords = torch.arange(side, dtype=torch.float32)
    rows, cols = ink.any(2), ink.any(1)
    empty = ~rows.any(1)
    big = torch.full_like(coords, side)
    top = torch.where(rows, coords, big).amin(1)
    bottom = torch.where(rows, coords, -big).amax(1)
    left = torch.where(cols, coords, big).amin(1)
    right = torch.where(cols, coords, -big).amax(1)
    extent = torch.maximum(bottom - top, right - left) + 1
    zoom = torch.where(empty, torch.ones(n), box / extent.clamp_min(1))  # output size / input size
    mass = images[:, 0].sum((1, 2)).clamp_min(1e-6)
    centre_y = (images[:, 0].sum(2) * coords).sum(1) / mass
    centre_x = (images[:, 0].sum(1) * coords).sum(1) / mass
    # Output pixel p = zoom * input pixel + offset, the offset a whole number of pixels that brings the centre of
    # mass to pixel side / 2 (as the service places its patch); in affine_grid's coordinates (align_corners=False,
    # pixel i at (2i + 1) / side - 1) that is input = output / zoom + ((side - 1 - 2 offset) / zoom + 1) / side - 1.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    for row, centre in ((0, centre_x), (1, centre_y)):
        offset = torch.round(side // 2 - centre * zoom)
        theta[:, row, 2] = ((side - 1 - 2 * offset) / zoom + 1) / side - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros").clamp(0, 1)


def augment(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A person's version of every digit in the batch (see the module's docstring)."""
    if cfg.pen:
        images = pen_width(images, cfg.pen, cfg.pen_p, gen)
    if cfg.blur:
        images = blur(images, cfg.blur, cfg.blur_p, gen)
    images = warp(images, cfg, gen)
    return to_mnist_layout(images) if cfg.renormalise else images


def augment_once(images: np.ndarray, cfg: AugmentConfig, seed: int) -> torch.Tensor:
    """``images`` changed once by :func:`augment`, the same every time (the changed validation digits that
    ``scores.calibration = "clean+augmented"`` calibrates on)."""
    return augment(torch.from_numpy(images), cfg, torch.Generator().manual_seed(seed))
