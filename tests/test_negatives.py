import pytest
import torch

from openset.config import NegativesConfig
from openset.negatives import KINDS, NegativeSampler


def digits(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 6:22, 10:18] = torch.rand(n, 1, 16, 8, generator=gen)
    return images, torch.arange(n) % 5


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_keeps_shape_and_range_and_changes_the_image(kind):
    images, labels = digits()
    out = KINDS[kind](images, labels, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, images)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kinds_are_seeded(kind):
    images, labels = digits()
    a = KINDS[kind](images, labels, torch.Generator().manual_seed(3))
    b = KINDS[kind](images, labels, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sampler_draws_ratio_times_batch():
    images, labels = digits(40)
    sampler = NegativeSampler(NegativesConfig(ratio=0.5))
    assert sampler.sample(images, labels, torch.Generator().manual_seed(0)).shape == (20, 1, 28, 28)


def test_pool_sources_draw_from_the_pool_and_need_one():
    pool = torch.full((10, 1, 28, 28), 0.25)
    sampler = NegativeSampler(NegativesConfig(source="supervised"), pool)
    out = sampler.sample(*digits(8), torch.Generator().manual_seed(0))
    assert torch.all(out == 0.25)
    with pytest.raises(ValueError, match="pool"):
        NegativeSampler(NegativesConfig(source="auxiliary:fashion_mnist"))


def test_none_source_is_disabled():
    assert not NegativeSampler(NegativesConfig(source="none")).enabled


def test_mirror_flips_a_digit_unless_its_mirror_image_is_itself():
    shapes = torch.zeros(2, 1, 28, 28)
    shapes[0, :, 6:22, 8:11] = 1.0  # an "L": a stroke down the left side...
    shapes[0, :, 19:22, 8:20] = 1.0  # ...and one along the bottom
    shapes[1, :, 6:22, 13:15] = 1.0  # a centred upright bar, the same in either mirror
    out = KINDS["mirror"](shapes, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert torch.equal(out[0], shapes[0].flip(2)) or torch.equal(out[0], shapes[0].flip(1))
    lying = torch.zeros(1, 28, 28)
    lying[:, 13:15, 6:22] = 1.0  # the bar turned a quarter, whichever way
    assert torch.equal(out[1], lying) or torch.equal(out[1], lying.flip(1))
