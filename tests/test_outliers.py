"""Virtual outliers in feature space (openset.outliers): queues per class, the least likely draws, and training
with them."""

import pytest
import torch

from openset.config import Config, ConfigError, OutlierSynthesisConfig
from openset.outliers import VirtualOutliers


def test_queues_keep_the_newest_embeddings_of_each_class_until_every_class_is_full():
    outliers = VirtualOutliers(OutlierSynthesisConfig(queue=3), classes=2)
    outliers.remember(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0, 0, 0]))
    assert not outliers.ready  # class 1 has nothing yet
    outliers.remember(torch.tensor([[3.0], [4.0], [5.0], [6.0]]), torch.tensor([0, 1, 1, 1]))
    assert outliers.ready
    assert outliers.queues[0].view(-1).tolist() == [1.0, 2.0, 3.0] and outliers.queues[1].view(-1).tolist() == [
        4.0, 5.0, 6.0]
    outliers.reset()
    assert not outliers.ready


def test_virtual_outliers_lie_outside_their_class_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    cfg = OutlierSynthesisConfig(queue=500, draws=1000, keep=5)
    outliers = VirtualOutliers(cfg, classes=2)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    labels = torch.arange(1000) % 2
    embedding = centres[labels] + torch.randn(1000, 3, generator=gen)
    outliers.remember(embedding, labels)
    virtual = outliers.sample(torch.Generator().manual_seed(1))
    assert virtual.shape == (2 * 5, 3)
    # Each class's virtual outliers are farther from its centre than nearly all of its own embeddings.
    for c in range(2):
        own = (embedding[labels == c] - centres[c]).norm(dim=1)
        drawn = (virtual[c * 5 : (c + 1) * 5] - centres[c]).norm(dim=1)
        assert drawn.min() > torch.quantile(own, 0.95)
    assert torch.equal(virtual, outliers.sample(torch.Generator().manual_seed(1)))


def test_training_with_virtual_outliers_runs_and_needs_one_network(data_dir):
    from openset.data import open_set_data
    from training.train import fit

    cfg = Config().override(model={"hidden": [16], "dropout": 0.0}, optim={"epochs": 2, "batch_size": 512},
                            outliers={"weight": 1.0, "start_epoch": 2, "queue": 50, "draws": 100, "keep": 4})
    data = open_set_data(cfg.data, cfg.seed, data_dir)
    small = type(data)(data.classes, data.train.subset(torch.arange(3000).numpy()), data.val, data.test_known,
                       data.test_unknown, data.train_unknown)
    with_outliers, history = fit(cfg, small)
    without, plain = fit(cfg.override(outliers={"weight": 0.0}), small)
    # The first epoch is the same (no virtual outliers before start_epoch); the second is not.
    assert history[0] == plain[0] and history[1] != plain[1]
    assert not torch.equal(with_outliers.known_head.weight, without.known_head.weight)
    with pytest.raises(ConfigError, match="members"):
        cfg.override(model={"members": 2})
