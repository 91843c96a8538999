import pytest
import torch

from openset.config import ModelConfig
from openset.models import ACTIVATIONS, ResidualBlock, build_model, extract_features


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
