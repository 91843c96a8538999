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
from openset.scores import Combined

OPSET = 18


class ExportModule(nn.Module):
    """The trained model plus the fitted combined score, as one torch module (eval mode)."""

    def __init__(self, model: nn.Module, combined: Combined) -> None:
        super().__init__()
        self.model = model.eval()
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        self.cosine = combined.metric == "cosine"
        self.register_buffer("centroids", as_tensor(combined.centroid_.centroids_))
        self.register_buffer("loc", as_tensor(combined.loc_))
        self.register_buffer("scale", as_tensor(combined.scale_))
        self.register_buffer("weights", as_tensor(combined.weights))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding, known_logit, _ = self.model(image)
        if self.cosine:
            embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
        squared = ((embedding[:, None, :] - self.centroids[None, :, :]) ** 2).sum(dim=2)
        distance = squared.min(dim=1).values.clamp_min(0.0).sqrt()
        parts = torch.stack([known_logit, -distance], dim=1)
        score = (((parts - self.loc) / self.scale) * self.weights).sum(dim=1)
        return logits, logits.softmax(dim=1), torch.sigmoid(known_logit), distance, score


@torch.no_grad()
def run_torch(module: ExportModule, images: torch.Tensor, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Every contract output computed by torch, for parity checks and evaluation."""
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
