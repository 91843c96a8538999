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


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_plain_cnn_stages_halve_the_resolution_and_flatten(norm):
    cfg = ModelConfig(arch="cnn", block="plain", channels=(4, 8), hidden=(16,), norm=norm, batch_norm=False)
    model = build_model(cfg, num_classes=5).eval()
    stages = [m for m in model.backbone if isinstance(m, torch.nn.Sequential)]
    assert len(stages) == 2 and all(isinstance(s[-1], torch.nn.MaxPool2d) for s in stages)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 4  # two 3x3 convolutions a stage
    kind = torch.nn.BatchNorm2d if norm == "batch" else torch.nn.GroupNorm
    assert sum(isinstance(m, kind) for m in model.modules()) == 4
    assert stages[1](stages[0](torch.rand(2, 1, 28, 28))).shape == (2, 8, 7, 7)
    assert model(torch.rand(3, 1, 28, 28)).embedding.shape == (3, 16)
    assert build_model(cfg, num_classes=3, side=16)(torch.rand(2, 1, 16, 16)).logits.shape == (2, 3)


def test_group_norm_answers_do_not_depend_on_the_batch_in_training_either():
    """Group norm has no batch statistics: an image's output in train mode is its own whatever shares the batch
    (batch norm's depends on the batch, which holds the negatives too)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="cnn", block="plain", channels=(8, 8), hidden=(), dropout=0.0, batch_norm=False)
    x = torch.rand(4, 1, 28, 28)
    group = build_model(cfg.model_copy(update={"norm": "group"}), num_classes=5).train()
    torch.testing.assert_close(group(x[:1]).logits, group(x).logits[:1])
    batch = build_model(cfg.model_copy(update={"norm": "batch"}), num_classes=5).train()
    assert not torch.allclose(batch(x[:2]).logits[:1], batch(x).logits[:1])


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


def test_known_statistics_leave_batch_norm_to_the_known_digits():
    """With ``norm = "known"`` the batch's statistics are those of its known digits, applied to the negatives too:
    the knowns' outputs and the running statistics after a step are the same whatever the negatives are."""
    from openset.models import KnownBatchNorm2d, known_rows

    cfg = ModelConfig(arch="cnn", block="plain", channels=(4,), hidden=(), norm="known", batch_norm=False,
                      dropout=0.0)
    knowns = torch.rand(16, 1, 28, 28)
    outputs, stats = [], []
    for negatives in (torch.rand(16, 1, 28, 28) * 50, torch.zeros(16, 1, 28, 28)):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=5).train()
        with known_rows(model, len(knowns)):
            outputs.append(model(torch.cat([knowns, negatives])).logits[:16])
        norm = next(m for m in model.modules() if isinstance(m, KnownBatchNorm2d))
        assert norm.known is None  # only for the block
        stats.append((norm.running_mean.clone(), norm.running_var.clone()))
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(stats[0], stats[1])
    # Outside the block it is batch norm of the whole batch, and in eval mode of the running statistics.
    torch.manual_seed(0)
    plain = build_model(cfg, num_classes=5).train()
    mixed = plain(torch.cat([knowns, torch.rand(16, 1, 28, 28) * 50])).logits[:16]
    assert not torch.allclose(mixed, outputs[0])
