import pytest
import torch

from openset.config import ModelConfig
from openset.models import ACTIVATIONS, ResidualBlock, build_model, extract_features, members


@pytest.mark.parametrize("hidden", [(), (16,), (32, 16, 8)])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_output_shapes(hidden, activation):
    model = build_model(ModelConfig(hidden=hidden, activation=activation), num_classes=5).eval()
    out = model(torch.rand(3, 1, 28, 28))
    assert out.logits.shape == (3, 5)
    assert out.embedding.shape == (3, hidden[-1] if hidden else 784)
    assert out.known_logit.shape == (3,)


def test_zero_hidden_layers_is_logistic_regression():
    model = build_model(ModelConfig(hidden=()), num_classes=5)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 2  # classifier + known head


def test_normalisation_is_inside_the_model():
    cfg = ModelConfig(hidden=(), normalization={"mean": 0.5, "std": 0.25})
    model = build_model(cfg, num_classes=2).eval()
    x = torch.full((1, 1, 28, 28), 0.75)
    assert torch.allclose(model(x).embedding, torch.ones(1, 784))


def test_extract_features_matches_forward_in_eval_mode():
    model = build_model(ModelConfig(hidden=(16,)), num_classes=5)
    model.train()
    images = torch.rand(10, 1, 28, 28)
    feats = extract_features(model, images, batch_size=4)
    assert model.training  # restored
    model.eval()
    torch.testing.assert_close(torch.as_tensor(feats.logits).float(), model(images).logits)


@pytest.mark.parametrize("channels, hidden", [((4,), ()), ((4, 8), (16,)), ((4, 8, 8), ())])
def test_cnn_backbone_shapes(channels, hidden):
    model = build_model(ModelConfig(arch="cnn", channels=channels, hidden=hidden), num_classes=5).eval()
    out = model(torch.rand(3, 1, 28, 28))
    assert out.logits.shape == (3, 5) and out.known_logit.shape == (3,)
    assert out.embedding.shape == (3, hidden[-1] if hidden else channels[-1])


def test_cnn_stages_are_residual_and_downsample():
    model = build_model(ModelConfig(arch="cnn", channels=(4, 8), hidden=()), num_classes=5).eval()
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2
    assert isinstance(blocks[0].shortcut, torch.nn.Identity)  # same width, same size: identity shortcut
    x = torch.rand(2, 4, 28, 28)
    assert blocks[1](x).shape == (2, 8, 14, 14)  # the second stage halves the resolution


def test_cnn_needs_channels():
    with pytest.raises(ValueError):
        ModelConfig(arch="cnn", channels=())


def test_an_ensemble_is_one_model_of_its_members():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16, 8), members=3), num_classes=5).eval()
    assert len(members(model)) == 3
    x = torch.rand(4, 1, 28, 28)
    out, parts = model(x), [m(x) for m in members(model)]
    assert torch.allclose(out.logits, torch.stack([p.logits for p in parts]).mean(0))
    assert torch.allclose(out.known_logit, torch.stack([p.known_logit for p in parts]).mean(0))
    # The embedding: the members' unit vectors side by side, scaled so that the whole has unit length.
    assert out.embedding.shape == (4, 24)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out.embedding[:, 8:16] * 3**0.5, torch.nn.functional.normalize(parts[1].embedding, dim=1))
    assert members(build_model(ModelConfig(hidden=(8,)), num_classes=5))[0].known_head.out_features == 5


def test_test_time_augmentation_averages_the_moved_copies():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(16,), tta=1, dropout=0.0), num_classes=3).eval()
    x = torch.rand(2, 1, 28, 28)
    views = [x] + [torch.roll(x, step, dims) for dims in (2, 3) for step in (-1, 1)]
    expected = torch.stack([model._forward(v).logits for v in views]).mean(0)
    assert torch.allclose(model(x).logits, expected, atol=1e-6)
    model.train()
    assert torch.equal(model(x).logits, model._forward(x).logits)  # training sees single images
