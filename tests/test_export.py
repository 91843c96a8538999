import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from openset.calibration import RULE
from openset.config import ModelConfig
from openset.contract import OUTPUTS, tensor_specs
from openset.export import WEIGHTS, ExportModule, export_graph, quantize, run_torch, with_metadata
from openset.manifest import FORMAT_VERSION, ModelManifest, check_graph, run_session
from openset.models import build_model, extract_features
from openset.scores import KNN, CentroidDistance, Combined
from training.pipeline import BATCH_TOLERANCE, check_batch_invariance

MLP = ModelConfig(hidden=(16,))
CNN = ModelConfig(arch="cnn", channels=(4, 8), hidden=(16,))
DISTANCES = {
    "euclidean centroids": (CentroidDistance("euclidean"), MLP),
    "cosine centroids": (CentroidDistance("cosine"), MLP),
    "cosine prototypes": (CentroidDistance("cosine", per_class=4), MLP),
    "knn": (KNN(k=3, bank=40), MLP),
    "residual cnn, knn": (KNN(k=3, bank=40), CNN),  # the same contract from the other backbone
    "ensemble of 3, knn": (KNN(k=3, bank=40), MLP.model_copy(update={"members": 3})),
    "test-time shifts, knn": (KNN(k=3, bank=40), MLP.model_copy(update={"tta": 1})),
    "16x16 images, knn": (KNN(k=3, bank=40), MLP, 16),  # another input size: the graph follows the data
}


def tiny_module(distance, model_cfg=MLP, side=28, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_cfg, num_classes=3, side=side).eval()
    # Per-image contrast: uniform noise alone pools to nearly one CNN embedding, a degenerate fit.
    images = torch.rand(60, 1, side, side) * torch.linspace(0.1, 1.0, 60).view(60, 1, 1, 1)
    labels = np.arange(60) % 3
    feats = extract_features(model, images)
    combined = Combined(head_weight=0.4, distance=distance).fit_features(feats, labels)
    return ExportModule(model, combined), combined, model


def manifest_of(graph: bytes, classes: list[str], side: int) -> ModelManifest:
    """A manifest as openset train writes one, for a graph made here."""
    image, outputs = tensor_specs(len(classes), side, "a distance")
    return ModelManifest.model_validate({
        "format_version": FORMAT_VERSION, "name": "tiny", "version": "1", "classes": classes, "unknown_label": "other",
        "input": image, "outputs": outputs,
        "decision": {"output": "score", "threshold": 0.25, "target_tpr": 0.95, "rule": RULE}, "metrics": {},
        "provenance": {"protocol": "test", "config": {}, "data": {}, "versions": {}},
        "onnx_sha256": hashlib.sha256(graph).hexdigest()})


@pytest.fixture(scope="module", params=sorted(DISTANCES))
def exported(request):
    module, combined, model = tiny_module(*DISTANCES[request.param])
    side = DISTANCES[request.param][2] if len(DISTANCES[request.param]) > 2 else 28
    graph = with_metadata(export_graph(module, side), {"classes": ["a", "b", "c"], "threshold": 0.25})
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return module, combined, model, graph, session, side


def run(session, images):
    return run_session(session, "image", list(OUTPUTS), images)


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_onnx_matches_torch_for_any_batch_size(exported, batch):
    module, _, _, _, session, side = exported
    images = torch.rand(batch, 1, side, side)
    ours, theirs = run_torch(module, images), run(session, images.numpy())
    for name in OUTPUTS:
        assert theirs[name].shape[0] == batch
        # float32 kernels differ between torch and ONNX Runtime (convolutions most): parity to 1e-4
        np.testing.assert_allclose(theirs[name], ours[name], atol=1e-4, rtol=1e-4)


def test_graph_outputs_equal_the_numpy_scores(exported):
    """``distance`` is the combined score's own distance term, and ``score`` the combined score."""
    _, combined, model, _, session, side = exported
    images = torch.rand(20, 1, side, side)
    out = run(session, images.numpy())
    feats = extract_features(model, images)
    np.testing.assert_allclose(out["score"], combined.score_features(feats), atol=1e-4)
    np.testing.assert_allclose(out["distance"], combined.distance_.distances(feats), atol=1e-4)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["known_prob"], 1 / (1 + np.exp(-feats.known_logit)), atol=1e-5)


def test_the_graph_is_checked_against_its_manifest(exported):
    _, _, _, graph, session, side = exported
    check_graph(session, manifest_of(graph, ["a", "b", "c"], side))
    with pytest.raises(ValueError, match=r"\[-1, 5\]"):  # the manifest's five classes, the graph's three
        check_graph(session, manifest_of(graph, list("abcde"), side))
    with pytest.raises(ValueError, match="input"):  # the manifest's other input size
        check_graph(session, manifest_of(graph, ["a", "b", "c"], side + 4))
    props = {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}
    assert json.loads(props["classes"]) == ["a", "b", "c"]
    assert json.loads(props["threshold"]) == 0.25
    assert onnx.load_from_string(graph).opset_import[0].version >= 17


@pytest.mark.parametrize("weights", [w for w in WEIGHTS if w != "float32"])
def test_8_bit_weights_keep_the_contract_stay_near_float32_and_answer_each_image_alone(weights):
    """``export.weights``: the graph stores its large products' weights in 8 bits, keeps every input and output,
    its outputs stay near the float32 graph's, and an image's outputs are the same alone as in a shared call (the
    service batches clients together); float32 is the graph itself."""
    module, _, _ = tiny_module(KNN(k=3, bank=40), ModelConfig(hidden=(128,)))  # a first layer of 100k weights
    graph = export_graph(module, 28)
    assert quantize(graph, "float32") is graph
    small = quantize(graph, weights)
    assert "MatMulNBits" in {n.op_type for n in small.graph.node}
    assert [o.name for o in small.graph.output] == list(OUTPUTS)
    assert small.ByteSize() < 0.5 * graph.ByteSize()
    images = torch.rand(200, 1, 28, 28).numpy()
    session = ort.InferenceSession(small.SerializeToString(), providers=["CPUExecutionProvider"])
    full = run(ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]), images)
    quantized = run(session, images)
    assert np.mean(full["probs"].argmax(1) == quantized["probs"].argmax(1)) >= 0.9
    spread = full["score"].max() - full["score"].min()
    change = np.abs(full["score"] - quantized["score"])
    assert change.max() > 0 and np.median(change) < 0.05 * spread  # moved, by a little
    assert check_batch_invariance(lambda batch: run(session, batch), images[:16]) <= BATCH_TOLERANCE


def test_batch_invariance_check_refuses_a_graph_whose_answer_depends_on_its_batch():
    images = torch.rand(8, 1, 28, 28).numpy()
    own = lambda batch: {"score": batch.mean(axis=(1, 2, 3))}  # noqa: E731
    assert check_batch_invariance(own, images) == 0
    shared = lambda batch: {"score": batch.mean(axis=(1, 2, 3)) - batch.mean()}  # noqa: E731  against the call
    with pytest.raises(RuntimeError, match="depend on the batch"):
        check_batch_invariance(shared, images)


def test_graph_check_rejects_a_foreign_graph(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
    )
    raw = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(ValueError, match="input"):
        check_graph(ort.InferenceSession(raw, providers=["CPUExecutionProvider"]), manifest_of(raw, ["a", "b"], 28))
