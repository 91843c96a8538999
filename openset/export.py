"""ONNX export: the trained model and its fitted combined score as one graph (see ``openset.contract``)."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from openset.contract import INPUT, OUTPUTS
from openset.models import extract_features
from openset.scores import Combined, Features, ReferenceDistance

OPSET = 18
# ``export.weights``: the type the matrix products' weights are stored in (None: float32, as trained).
WEIGHTS = {"float32": None, "uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


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
    """The trained model and its fitted combined score as one torch module (the contract, ``openset.contract``).

    ``distance`` is the combined score's own distance term (``combined.distance_``), so the ``distance`` output is
    what the score uses. :meth:`outputs` computes the contract from features the model already gave, so a split
    passes through the model once however many scores are read from it.
    """

    def __init__(self, model: nn.Module, combined: Combined) -> None:
        super().__init__()
        self.model = model.eval()
        self.distance = KthDistance(combined.distance_)
        self.distance_measures = combined.distance_.measures  # what the distance output is, for the manifest
        self.register_buffer("loc", _as_tensor(combined.loc_))
        self.register_buffer("scale", _as_tensor(combined.scale_))
        self.register_buffer("weights", _as_tensor(combined.weights))

    def head(self, logits: torch.Tensor, embedding: torch.Tensor, known_logit: torch.Tensor
             ) -> tuple[torch.Tensor, ...]:
        distance = self.distance(embedding)
        parts = torch.stack([known_logit, -distance], dim=1)
        score = (((parts - self.loc) / self.scale) * self.weights).sum(dim=1)
        return logits, logits.softmax(dim=1), torch.sigmoid(known_logit), distance, score

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding, known_logit, _ = self.model(image)
        return self.head(logits, embedding, known_logit)

    @torch.no_grad()
    def outputs(self, features: Features, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Every contract output from the model's features (:func:`openset.models.extract_features`)."""
        parts = [torch.as_tensor(f, dtype=torch.float32) for f in (features.logits, features.embedding,
                                                                     features.known_logit)]
        chunks = [self.head(*(p[i : i + batch_size] for p in parts)) for i in range(0, len(features), batch_size)]
        return {name: torch.cat([c[k] for c in chunks]).numpy() for k, name in enumerate(OUTPUTS)}


def run_torch(module: ExportModule, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Every contract output computed by torch: one pass through the model, then the fitted score."""
    return module.outputs(extract_features(module.model, images))


def export_graph(module: ExportModule, side: int) -> onnx.ModelProto:
    """The module as an ONNX graph with the contract's names, for ``[N, 1, side, side]`` images (checked)."""
    module.eval()
    batch = torch.export.Dim("N", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(
            module,
            (torch.rand(2, 1, side, side),),
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
    proto.producer_name = "openset"
    onnx.checker.check_model(proto)
    return proto


def quantize(proto: onnx.ModelProto, weights: str) -> onnx.ModelProto:
    """The graph with its MatMul and Gemm weights stored in ``weights`` (:data:`WEIGHTS`; ONNX Runtime's dynamic
    quantization: 8-bit weights, activations quantized per call); float32 returns it as it is. Inputs, outputs and
    their names are unchanged, so the contract holds; the values move (the caller calibrates on the result)."""
    if WEIGHTS[weights] is None:
        return proto
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / f"{weights}.onnx"
        onnx.save(proto, str(source))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic's advice, on the root logger, to pre-process the graph
        try:
            quantize_dynamic(source, target, weight_type=WEIGHTS[weights])
        finally:
            root.setLevel(level)
        quantized = onnx.load(str(target))
    quantized.producer_name = "openset"
    del quantized.metadata_props[:]  # the quantizer's own note: the metadata is the manifest (with_metadata)
    onnx.checker.check_model(quantized)
    return quantized


def with_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> bytes:
    """The graph's bytes with ``metadata`` in its ``metadata_props`` (strings as they are, the rest as JSON)."""
    proto = copy.deepcopy(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    return proto.SerializeToString()
