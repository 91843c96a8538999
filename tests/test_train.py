import pytest
import torch

from openset.config import Config, OptimConfig
from openset.data import OpenSetData, Split
from openset.models import build_model, members
from training.train import OPTIMIZERS, SCHEDULES, build_optimizer, fit, head_loss, supcon_loss


def toy_data(n=120, seed=0):
    """Three 'digits': bright bars in different rows, so a tiny MLP learns them in one epoch."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, 28, 28, generator=gen) * 0.1
    for c in range(3):
        images[labels == c, :, 4 + 8 * c : 10 + 8 * c, 6:22] = 1.0
    split = Split(images.numpy(), labels.numpy())
    return OpenSetData((0, 1, 2), split, split, split, split.subset(slice(0)), split.subset(slice(0)))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_optimizer_and_schedule_steps(name, schedule):
    model = build_model(Config().model.model_copy(update={"hidden": (8,)}), 3)
    optimizer, scheduler = build_optimizer(model, OptimConfig(name=name, schedule=schedule, lr=0.01), steps=4)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.rand(4, 1, 28, 28)).logits.sum().backward()
    optimizer.step()
    scheduler.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_single_head_loss_targets_knowns_one_and_negatives_zero():
    perfect = torch.tensor([[20.0], [20.0], [-20.0]])
    assert head_loss(perfect, torch.tensor([0, 2]), negatives=1) < 1e-6
    assert head_loss(-perfect, torch.tensor([0, 2]), negatives=1) > 10


def test_per_class_head_loss_is_one_vs_rest():
    labels = torch.tensor([1, 0])
    right = torch.tensor([[-20.0, 20.0, -20.0], [20.0, -20.0, -20.0], [-20.0, -20.0, -20.0]])
    assert head_loss(right, labels, negatives=1) < 1e-6
    swapped = right[[1, 0, 2]]
    assert head_loss(swapped, labels, negatives=1) > 5


@pytest.mark.parametrize("known_head", ["single", "per_class"])
def test_fit_learns_and_returns_the_best_validation_model(known_head):
    cfg = Config().override(
        data={"augment": False}, model={"hidden": [16], "known_head": known_head},
        optim={"epochs": 3, "batch_size": 32, "lr": 0.01},
    )
    model, history = fit(cfg, toy_data())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert max(row["val_acc"] for row in history) == 1.0
    assert not model.training
    data = toy_data(seed=1)
    assert (model(torch.from_numpy(data.val.images)).logits.argmax(1).numpy() == data.val.labels).all()


def test_fit_is_seeded():
    cfg = Config().override(model={"hidden": [8]}, optim={"epochs": 1, "batch_size": 32})
    a, _ = fit(cfg, toy_data())
    b, _ = fit(cfg, toy_data())
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_supcon_loss_is_low_when_classes_cluster():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clustered = torch.eye(3)[labels] + 0.01 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    scattered = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    assert supcon_loss(clustered, labels, 0.1) < 0.01 < supcon_loss(scattered, labels, 0.1)


def test_ensemble_members_learn_each_on_their_own():
    cfg = Config().override(model={"hidden": [16], "members": 2}, optim={"epochs": 2, "batch_size": 32},
                            contrastive={"weight": 0.5})
    model, history = fit(cfg, toy_data())
    first, second = members(model)
    assert history[-1]["val_acc"] == 1.0
    # Different starting weights, so different networks; each one a classifier on its own.
    assert not torch.equal(first.classifier.weight, second.classifier.weight)
    images = torch.from_numpy(toy_data(seed=1).val.images)
    for member in (first, second):
        assert (member(images).logits.argmax(1).numpy() == toy_data(seed=1).val.labels).mean() > 0.9
