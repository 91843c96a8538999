"""Virtual outliers in feature space (VOS, Du et al. 2022): what the known head learns to refuse besides the
negatives drawn as images.

The known digits' embeddings of an epoch's batches fill a queue per class; from then on, every batch draws many
points from Gaussians fitted to the queues (one mean per class, one covariance shared by all) and keeps the least
likely draws of each class: points just outside the region the class fills, where the model has seen nothing.
The known head (and, as for the negatives, the softmax's uniformity) is trained on them as unknowns. Under a
Gaussian ``mean + L z`` the likelihood falls with ``|z|``, so the least likely draws are those of the largest
``|z|``. Queues start empty every epoch, so that a run resumed after an epoch draws what it would have drawn.
"""

from __future__ import annotations

import torch

from openset.config import OutlierSynthesisConfig


class VirtualOutliers:
    def __init__(self, cfg: OutlierSynthesisConfig, classes: int) -> None:
        self.cfg = cfg
        self.classes = classes
        self.reset()

    def reset(self) -> None:
        """Empty queues (at every epoch's start)."""
        self.queues: list[torch.Tensor | None] = [None] * self.classes

    def remember(self, embedding: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the newest ``cfg.queue`` embeddings of every class (detached)."""
        embedding = embedding.detach()
        for c in range(self.classes):
            new = embedding[labels == c]
            old = self.queues[c]
            joined = new if old is None else torch.cat([old, new])
            self.queues[c] = joined[-self.cfg.queue :]

    @property
    def ready(self) -> bool:
        return all(q is not None and len(q) == self.cfg.queue for q in self.queues)

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """``cfg.keep`` virtual outliers of every class, ``[classes * keep, D]``: the least likely of ``cfg.draws``
        draws from the class's Gaussian."""
        queues = torch.stack(self.queues)  # [K, Q, D]
        means = queues.mean(1)
        centred = (queues - means[:, None]).reshape(-1, queues.shape[-1])
        covariance = centred.T @ centred / len(centred)
        scale = torch.linalg.cholesky(covariance + 1e-4 * torch.eye(len(covariance)))
        z = torch.randn(self.classes, self.cfg.draws, len(covariance), generator=gen)
        farthest = z.norm(dim=2).topk(self.cfg.keep, dim=1).indices  # [K, keep]
        picked = torch.gather(z, 1, farthest[:, :, None].expand(-1, -1, z.shape[-1]))
        return (means[:, None] + picked @ scale.T).reshape(-1, z.shape[-1])
