"""The open-set MLP: one embedding, a softmax head over the known classes and a sigmoid known-class head."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from openset.config import ModelConfig
from openset.scores import Features

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [N, K]
    embedding: torch.Tensor  # [N, D]
    known_logit: torch.Tensor  # [N]; sigmoid gives the known-class probability
    head_logits: torch.Tensor  # [N, 1] single head, or [N, K] one-vs-rest heads


class OpenSetMLP(nn.Module):
    """Input ``[N, 1, 28, 28]`` in [0, 1]; normalisation is part of the model (and of its ONNX graph)."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(cfg.normalization.mean))
        self.register_buffer("std", torch.tensor(cfg.normalization.std))
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for hidden in cfg.hidden:
            layers.append(nn.Linear(width, hidden, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = hidden
        self.backbone = nn.Sequential(*layers)
        self.embedding_dim = width
        self.classifier = nn.Linear(width, num_classes)
        self.known_head = nn.Linear(width, num_classes if cfg.known_head == "per_class" else 1)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        embedding = self.backbone((images - self.mean) / self.std)
        head_logits = self.known_head(embedding)
        return ModelOutput(self.classifier(embedding), embedding, head_logits.max(dim=1).values, head_logits)


def build_model(cfg: ModelConfig, num_classes: int) -> OpenSetMLP:
    return OpenSetMLP(cfg, num_classes)


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, batch_size: int = 4096) -> Features:
    """Run the model once in eval mode; every score is then computed from these features."""
    was_training = model.training
    model.eval()
    parts = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return Features(
        logits=torch.cat([p.logits for p in parts]).numpy().astype(np.float64),
        embedding=torch.cat([p.embedding for p in parts]).numpy().astype(np.float64),
        known_logit=torch.cat([p.known_logit for p in parts]).numpy().astype(np.float64),
    )
