"""ONNX export: the trained model and its fitted combined score as one graph (see ``openset.contract``)."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from openset.contract import INPUT, OUTPUTS
from openset.models import extract_features
from openset.scores import Combined, Features, ReferenceDistance

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


LARGE = 2**16  # a product's weights worth storing in 8 bits (the heads' few thousand stay float32)


def _linear_weight(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    """The constant weight of a ``Gemm`` that is torch's ``Linear`` (``x @ W.T (+ b)``) with at least
    :data:`LARGE` values; None for any other node."""
    if node.op_type != "Gemm" or node.input[1] not in weights:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    linear = attrs.get("transB") == 1 and not attrs.get("transA") and attrs.get("alpha", 1.0) == 1.0 \
        and attrs.get("beta", 1.0) == 1.0
    weight = weights[node.input[1]]
    return weight if linear and np.prod(weight.dims) >= LARGE else None


def _gemms_as_matmuls(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph with each large ``Linear`` (:func:`_linear_weight`) written as ``MatMul`` (+ ``Add``)
    with ``W.T`` stored, the form ``MatMulNBits`` quantizes; the values are the same."""
    proto = copy.deepcopy(proto)
    weights = {t.name: t for t in proto.graph.initializer}
    transposed: dict[str, onnx.TensorProto] = {}  # by the weight's name (a weight two layers share: one copy)
    nodes = []
    for node in proto.graph.node:
        weight = _linear_weight(node, weights)
        if weight is None:
            nodes.append(node)
            continue
        if weight.name not in transposed:
            transposed[weight.name] = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight).T.copy(),
                                                                   weight.name + ".T")
        biased = len(node.input) == 3
        product = node.output[0] + ".matmul" if biased else node.output[0]
        make = onnx.helper.make_node
        nodes.append(make("MatMul", [node.input[0], transposed[weight.name].name], [product],
                          name=node.name + ".matmul"))
        if biased:
            nodes.append(make("Add", [product, node.input[2]], [node.output[0]], name=node.name + ".add"))
    used = {name for node in nodes for name in node.input}
    kept = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.node[:], proto.graph.initializer[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend([*kept, *transposed.values()])
    return proto


def _blockwise_8_bit(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's weight-only quantization (``MatMulNBits``): each large product's weights in 8 bits, one
    scale per 32 values of a column; with ``accuracy_level=4`` the activations are quantized to int8 per row, so
    an image's outputs do not depend on the other images in its call."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # under _quiet_root_logger

    proto = _gemms_as_matmuls(proto)
    sizes = {t.name: np.prod(t.dims) for t in proto.graph.initializer}
    small = [n.name for n in proto.graph.node if n.op_type == "MatMul" and sizes.get(n.input[1], 0) < LARGE]
    quantizer = MatMulNBitsQuantizer(proto, bits=8, block_size=32, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=small)
    quantizer.process()
    return quantizer.model.model


# ``export.weights``: how the graph stores its matrix products' weights (float32: as trained).
WEIGHTS = {"float32": lambda proto: proto, "nbits8": _blockwise_8_bit}


@contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs its progress on the root logger, and its module configures the root logger
    when first imported (``logging.basicConfig`` at INFO): neither reaches openset's output."""
    root, guard = logging.getLogger(), logging.NullHandler()  # basicConfig leaves a root with a handler alone
    level = root.level
    root.setLevel(logging.ERROR)
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)
        root.setLevel(level)


def quantize(proto: onnx.ModelProto, weights: str) -> onnx.ModelProto:
    """The graph with its weights stored as ``weights`` (:data:`WEIGHTS`); float32 returns it as it is. Inputs,
    outputs and their names are unchanged, so the contract holds; the values move (the caller calibrates on the
    result)."""
    if weights == "float32":
        return proto
    with _quiet_root_logger():
        quantized = WEIGHTS[weights](proto)
    quantized.producer_name = "openset"
    del quantized.metadata_props[:]  # the quantizer's own notes: the metadata is the manifest (with_metadata)
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
