"""ONNX export: the trained model and its fitted combined score as one graph (see ``openset.contract``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from openset.artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from openset.contract import INPUT, OUTPUTS
from openset.scores import CentroidDistance, Combined, ReferenceDistance

OPSET = 18


def _as_tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)


class KthDistance(nn.Module):
    """A fitted :class:`ReferenceDistance` in torch: the rank-th smallest distance to its references."""

    def __init__(self, detector: ReferenceDistance) -> None:
        super().__init__()
        self.normalise, self.rank = bool(detector.normalise), int(detector.rank)
        references = _as_tensor(detector.references_)
        self.register_buffer("references", references)
        self.register_buffer("squared_norms", (references**2).sum(dim=1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
        # |e - r|^2 = |e|^2 - 2 e.r + |r|^2: one matrix product, no [N, M, D] intermediate.
        squared = (embedding**2).sum(dim=1, keepdim=True) - 2 * embedding @ self.references.T + self.squared_norms
        if self.rank == 1:
            kth = squared.min(dim=1).values
        else:
            kth = torch.topk(squared, self.rank, dim=1, largest=False).values[:, -1]
        return kth.clamp_min(0.0).sqrt()


class ExportModule(nn.Module):
    """The trained model, its class centroids and the fitted combined score as one torch module.

    ``centroid`` is the fitted one-centroid-per-class detector behind ``centroid_distance``;
    the combined score's distance term is ``combined.distance_`` (often the same detector).
    """

    def __init__(self, model: nn.Module, combined: Combined, centroid: CentroidDistance) -> None:
        super().__init__()
        self.model = model.eval()
        self.centroid_distance = KthDistance(centroid)
        shared = isinstance(combined.distance_, CentroidDistance) and combined.distance_.per_class == 1 and (
            combined.distance_.metric == centroid.metric)
        self.score_distance = None if shared else KthDistance(combined.distance_)
        self.register_buffer("loc", _as_tensor(combined.loc_))
        self.register_buffer("scale", _as_tensor(combined.scale_))
        self.register_buffer("weights", _as_tensor(combined.weights))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding, known_logit, _ = self.model(image)
        distance = self.centroid_distance(embedding)
        score_distance = distance if self.score_distance is None else self.score_distance(embedding)
        parts = torch.stack([known_logit, -score_distance], dim=1)
        score = (((parts - self.loc) / self.scale) * self.weights).sum(dim=1)
        return logits, logits.softmax(dim=1), torch.sigmoid(known_logit), distance, score


@torch.no_grad()
def run_torch(module: ExportModule, images: np.ndarray | torch.Tensor, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Every contract output computed by torch, for parity checks and evaluation."""
    images = torch.as_tensor(images)
    parts = [module(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: torch.cat([p[k] for p in parts]).numpy() for k, name in enumerate(OUTPUTS)}


def export_onnx(module: ExportModule, path: str | Path, metadata: dict[str, Any]) -> str:
    """Write the graph with ``metadata`` in its ``metadata_props``; returns the file's SHA-256."""
    module.eval()
    example = torch.rand(2, 1, 28, 28)
    batch = torch.export.Dim("N", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(raw),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,  # the exporter's own progress lines; openset train prints one line for the phase
            dynamic_shapes={"image": {0: batch}},
        )
        proto = onnx.load(str(raw))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    proto.producer_name = "openset"
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return sha256_file(path)


def write_model_json(path: str | Path, metadata: dict[str, Any], onnx_sha256: str) -> None:
    atomic_write_json(path, {**metadata, "onnx_sha256": onnx_sha256})
