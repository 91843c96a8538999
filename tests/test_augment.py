"""Augmentation of the known digits (openset.augment): each change does what it says, and the result is in
MNIST's layout, as the service's preprocessing makes it."""

import numpy as np
import pytest
import torch

from openset.augment import augment, blur, pen_width, to_mnist_layout, warp
from openset.config import AugmentConfig
from openset.data import load_dataset


@pytest.fixture(scope="module")
def digits(data_dir) -> torch.Tensor:
    return torch.from_numpy(load_dataset("mnist", train=False, root=data_dir).images[:64])


def centre_and_extent(images: torch.Tensor, ink: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    x = images[:, 0].numpy()
    mass = x.sum((1, 2))
    centre = np.stack([(x.sum(2) * np.arange(28)).sum(1) / mass, (x.sum(1) * np.arange(28)).sum(1) / mass], 1)
    rows, cols = (x > ink).any(2), (x > ink).any(1)
    extent = [max(np.ptp(np.nonzero(r)[0]), np.ptp(np.nonzero(c)[0])) + 1 for r, c in zip(rows, cols, strict=True)]
    return centre, np.array(extent)


def test_mnist_digits_are_already_in_the_layout(digits):
    np.testing.assert_allclose(to_mnist_layout(digits).numpy(), digits.numpy(), atol=1e-5)


def test_a_changed_digit_is_put_back_into_the_layout(digits):
    cfg = AugmentConfig(rotate=30, shear=0.4, scale=(0.6, 1.2), shift=3, elastic=2.0, elastic_p=1.0)
    moved = warp(digits, cfg, torch.Generator().manual_seed(0))
    centre, extent = centre_and_extent(to_mnist_layout(moved))
    assert np.abs(centre - 14).max() <= 1.0  # whole-pixel placement, as the service does
    assert np.median(extent) == pytest.approx(20, abs=1)
    before, _ = centre_and_extent(moved)
    assert np.abs(before - 14).max() > 2  # the warp did move them


def test_pen_width_thickens_and_thins(digits):
    gen = torch.Generator().manual_seed(0)
    changed = pen_width(digits, max_px=1.0, p=1.0, gen=gen)
    ratio = (changed > 0.5).sum((1, 2, 3)).float() / (digits > 0.5).sum((1, 2, 3)).float()
    assert ratio.max() > 1.5 and ratio.min() < 0.9  # some much thicker, some thinner
    assert float(changed.amax((1, 2, 3)).min()) == pytest.approx(1.0)  # full contrast, as the service shows it


def test_blur_spreads_the_ink_and_keeps_full_contrast(digits):
    blurred = blur(digits, max_sigma=1.5, p=1.0, gen=torch.Generator().manual_seed(0))
    assert float(((blurred > 0.05) & (blurred < 0.5)).sum()) > 1.5 * float(((digits > 0.05) & (digits < 0.5)).sum())
    assert float(blurred.amax((1, 2, 3)).min()) == pytest.approx(1.0)


def test_augment_is_seeded_and_keeps_shape_and_range(digits):
    cfg = AugmentConfig(rotate=25, shear=0.3, elastic=2.0, pen=1.0, blur=1.0, renormalise=True)
    a = augment(digits, cfg, torch.Generator().manual_seed(1))
    b = augment(digits, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == digits.shape
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(a, augment(digits, cfg, torch.Generator().manual_seed(2)))
