import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from openset.config import ModelConfig
from openset.contract import OUTPUTS, check_contract
from openset.export import ExportModule, export_onnx, run_torch
from openset.models import build_model, extract_features
from openset.scores import KNN, CentroidDistance, Combined
from training.evaluate import run_onnx

MLP = ModelConfig(hidden=(16,))
CNN = ModelConfig(arch="cnn", channels=(4, 8), hidden=(16,))
DISTANCES = {
    "euclidean centroids": (CentroidDistance("euclidean"), "euclidean", MLP),
    "cosine centroids": (CentroidDistance("cosine"), "cosine", MLP),
    "cosine prototypes": (CentroidDistance("cosine", per_class=4), "cosine", MLP),
    "knn": (KNN(k=3, bank=40), "cosine", MLP),
    "residual cnn, knn": (KNN(k=3, bank=40), "cosine", CNN),  # the same contract from the other backbone
    "ensemble of 3, knn": (KNN(k=3, bank=40), "cosine", MLP.model_copy(update={"members": 3})),
    "test-time shifts, knn": (KNN(k=3, bank=40), "cosine", MLP.model_copy(update={"tta": 1})),
}


def tiny_module(distance, metric, model_cfg=MLP, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_cfg, num_classes=3).eval()
    # Per-image contrast: uniform noise alone pools to nearly one CNN embedding, a degenerate fit.
    images = torch.rand(60, 1, 28, 28) * torch.linspace(0.1, 1.0, 60).view(60, 1, 1, 1)
    labels = np.arange(60) % 3
    feats = extract_features(model, images)
    combined = Combined(head_weight=0.4, distance=distance).fit_features(feats, labels)
    centroid = CentroidDistance(metric).fit_features(feats, labels)
    return ExportModule(model, combined, centroid), combined, model, centroid


@pytest.fixture(scope="module", params=sorted(DISTANCES))
def exported(request, tmp_path_factory):
    module, combined, model, centroid = tiny_module(*DISTANCES[request.param])
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    sha = export_onnx(module, path, {"classes": ["a", "b", "c"], "threshold": 0.25})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return module, combined, model, path, sha, session, centroid


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_onnx_matches_torch_for_any_batch_size(exported, batch):
    module, _, _, _, _, session, _ = exported
    images = torch.rand(batch, 1, 28, 28)
    ours, theirs = run_torch(module, images), run_onnx(session, images.numpy())
    for name in OUTPUTS:
        assert theirs[name].shape[0] == batch
        # float32 kernels differ between torch and ONNX Runtime (convolutions most): parity to 1e-4
        np.testing.assert_allclose(theirs[name], ours[name], atol=1e-4, rtol=1e-4)


def test_graph_outputs_equal_the_numpy_scores(exported):
    module, combined, model, _, _, session, centroid = exported
    images = torch.rand(20, 1, 28, 28)
    out = run_onnx(session, images.numpy())
    feats = extract_features(model, images)
    np.testing.assert_allclose(out["score"], combined.score_features(feats), atol=1e-4)
    np.testing.assert_allclose(out["centroid_distance"], centroid.distances(feats), atol=1e-4)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["known_prob"], 1 / (1 + np.exp(-feats.known_logit)), atol=1e-5)


def test_contract_and_metadata(exported):
    _, _, _, path, _, session, _ = exported
    check_contract(session, num_classes=3)
    with pytest.raises(ValueError, match="classes"):
        check_contract(session, num_classes=5)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["classes"]) == ["a", "b", "c"]
    assert json.loads(props["threshold"]) == 0.25
    assert onnx.load(str(path)).opset_import[0].version >= 17


def test_contract_check_rejects_a_foreign_graph(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="input"):
        check_contract(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), 3)
