"""The open-set network: a backbone (MLP or small CNN, plain or residual) gives one embedding, read by a softmax head
over the known classes and a sigmoid known-class head."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
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


def _dense_layers(cfg: ModelConfig, width: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for hidden in cfg.hidden:
        layers.append(nn.Linear(width, hidden, bias=not cfg.batch_norm))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    return layers, width


class KnownBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose batch statistics, in training, are those of the batch's first ``known`` images (the known
    digits of a batch of knowns followed by negatives), applied to the whole batch; the running statistics follow
    them alone. Set ``known`` for a pass with :func:`known_rows`; otherwise it is plain batch norm."""

    known: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.known is None:
            return super().forward(x)
        part = x[: self.known]
        mean, var = part.mean((0, 2, 3)), part.var((0, 2, 3), unbiased=False)
        with torch.no_grad():
            count = part.numel() // part.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / max(count - 1, 1), self.momentum)
            self.num_batches_tracked += 1
        scale = self.weight * torch.rsqrt(var + self.eps)  # (F.batch_norm takes no gradient through given statistics)
        return x * scale[:, None, None] + (self.bias - mean * scale)[:, None, None]


@contextlib.contextmanager
def known_rows(model: nn.Module, known: int) -> Iterator[None]:
    """For the block, every :class:`KnownBatchNorm2d` of ``model`` takes its statistics from the first ``known``
    images of a batch."""
    norms = [m for m in model.modules() if isinstance(m, KnownBatchNorm2d)]
    for m in norms:
        m.known = known
    try:
        yield
    finally:
        for m in norms:
            m.known = None


# The convolutions' normalisation (``model.norm``). Batch norm's statistics mix the known digits with the negatives
# of the same batch (and the running ones are those of the mix); "known" takes them from the known digits alone
# (KnownBatchNorm2d: the negatives normalised as the knowns are); group norm (Wu & He 2018) has none, each image
# normalised by itself.
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "known": KnownBatchNorm2d,
    "group": lambda channels: nn.GroupNorm(8 if channels % 8 == 0 else 1, channels),
}


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with normalisation and a shortcut (He et al. 2016); ``stride`` 2 halves the size."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, activation: str, dropout: float,
                 norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False), NORMS[norm](channels_out),
            ACTIVATIONS[activation](), nn.Dropout2d(dropout) if dropout else nn.Identity(),
            nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False), NORMS[norm](channels_out),
        )
        self.shortcut = nn.Identity() if stride == 1 and channels_in == channels_out else nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), NORMS[norm](channels_out))
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


def plain_stage(channels_in: int, channels_out: int, cfg: ModelConfig) -> nn.Sequential:
    """Two 3x3 convolutions, each normalised and activated, then a 2x2 max-pool (VGG, Simonyan & Zisserman 2015)."""
    layers: list[nn.Module] = []
    for width_in in (channels_in, channels_out):
        layers += [nn.Conv2d(width_in, channels_out, 3, 1, 1, bias=False), NORMS[cfg.norm](channels_out),
                   ACTIVATIONS[cfg.activation]()]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def mlp_backbone(cfg: ModelConfig, side: int) -> tuple[nn.Module, int]:
    layers, width = _dense_layers(cfg, side * side)
    return nn.Sequential(nn.Flatten(), *layers), width


def cnn_backbone(cfg: ModelConfig, side: int) -> tuple[nn.Module, int]:
    """``block = "plain"``: one :func:`plain_stage` per entry of ``channels`` (each halves the resolution), the
    feature map flattened, then the dense layers. ``"residual"``: a stem convolution, one residual block per stage,
    global average pooling, then the dense layers."""
    if cfg.block == "plain":
        stages = [plain_stage(c_in, c_out, cfg) for c_in, c_out in zip((1, *cfg.channels[:-1]), cfg.channels,
                                                                        strict=True)]
        flat = cfg.channels[-1] * (side >> len(cfg.channels)) ** 2
        dense, width = _dense_layers(cfg, flat)
        return nn.Sequential(*stages, nn.Flatten(), *dense), width
    stem = cfg.channels[0]
    layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, 1, 1, bias=False), NORMS[cfg.norm](stem),
                               ACTIVATIONS[cfg.activation]()]
    for stage, (channels_in, channels_out) in enumerate(zip((stem, *cfg.channels[:-1]), cfg.channels, strict=True)):
        layers.append(ResidualBlock(channels_in, channels_out, 1 if stage == 0 else 2, cfg.activation, cfg.dropout,
                                    cfg.norm))
    dense, width = _dense_layers(cfg, cfg.channels[-1])
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dense), width


BACKBONES = {"mlp": mlp_backbone, "cnn": cnn_backbone}


class OpenSetNet(nn.Module):
    """Input ``[N, 1, side, side]`` in [0, 1]; normalisation is part of the model (and of its ONNX graph)."""

    def __init__(self, cfg: ModelConfig, num_classes: int, side: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(cfg.normalization.mean))
        self.register_buffer("std", torch.tensor(cfg.normalization.std))
        self.backbone, self.embedding_dim = BACKBONES[cfg.arch](cfg, side)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)
        self.known_head = nn.Linear(self.embedding_dim, num_classes if cfg.known_head == "per_class" else 1)
        self.tta = cfg.tta

    def forward(self, images: torch.Tensor) -> ModelOutput:
        if self.tta and not self.training:
            # Test-time augmentation: the outputs averaged over the image and its copies moved by tta pixels
            # left, right, up and down (MNIST's empty margin makes the wrap-around harmless).
            views = [images] + [torch.roll(images, step, dims) for dims in (2, 3) for step in (-self.tta, self.tta)]
            outputs = self._forward(torch.cat(views))
            return ModelOutput(*(field.view(len(views), -1, *field.shape[1:]).mean(0) for field in outputs))
        return self._forward(images)

    def _forward(self, images: torch.Tensor) -> ModelOutput:
        embedding = self.backbone((images - self.mean) / self.std)
        head_logits = self.known_head(embedding)
        return ModelOutput(self.classifier(embedding), embedding, head_logits.max(dim=1).values, head_logits)


class Ensemble(nn.Module):
    """Several networks seen as one (Lakshminarayanan et al. 2017): logits, known logit and heads averaged; the
    embedding is the members' L2-normalised embeddings side by side, so a distance in it sums the members'
    cosine distances. Each member is trained on its own losses (``members``)."""

    def __init__(self, members: list[OpenSetNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        outputs = [member(images) for member in self.members]
        scale = len(outputs) ** -0.5
        return ModelOutput(
            torch.stack([o.logits for o in outputs]).mean(0),
            torch.cat([F.normalize(o.embedding, dim=1) * scale for o in outputs], dim=1),
            torch.stack([o.known_logit for o in outputs]).mean(0),
            torch.stack([o.head_logits for o in outputs]).mean(0),
        )


def build_model(cfg: ModelConfig, num_classes: int, side: int = 28) -> OpenSetNet | Ensemble:
    """The network for ``[N, 1, side, side]`` images (MNIST's 28 unless the data say otherwise)."""
    if cfg.members == 1:
        return OpenSetNet(cfg, num_classes, side)
    return Ensemble([OpenSetNet(cfg, num_classes, side) for _ in range(cfg.members)])


def members(model: nn.Module) -> list[nn.Module]:
    """The networks that are trained, each on its own losses."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


@torch.no_grad()
def extract_features(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 4096) -> Features:
    """Run the model once in eval mode; every score is then computed from these features."""
    images = torch.as_tensor(images)
    was_training = model.training
    model.eval()
    parts = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return Features(
        logits=torch.cat([p.logits for p in parts]).numpy().astype(np.float64),
        embedding=torch.cat([p.embedding for p in parts]).numpy().astype(np.float64),
        known_logit=torch.cat([p.known_logit for p in parts]).numpy().astype(np.float64),
    )
