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
