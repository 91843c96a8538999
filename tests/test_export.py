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
from openset.scores import Combined
from training.evaluate import run_onnx


def tiny_module(metric="euclidean", seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden=(16,)), num_classes=3).eval()
    images = torch.rand(60, 1, 28, 28)
    labels = np.arange(60) % 3
    combined = Combined(head_weight=0.4, metric=metric).fit_features(extract_features(model, images), labels)
    return ExportModule(model, combined), combined, model


@pytest.fixture(scope="module", params=["euclidean", "cosine"])
def exported(request, tmp_path_factory):
    module, combined, model = tiny_module(request.param)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    sha = export_onnx(module, path, {"classes": ["a", "b", "c"], "threshold": 0.25})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return module, combined, model, path, sha, session


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_onnx_matches_torch_for_any_batch_size(exported, batch):
    module, _, _, _, _, session = exported
    images = torch.rand(batch, 1, 28, 28)
    ours, theirs = run_torch(module, images), run_onnx(session, images.numpy())
    for name in OUTPUTS:
        assert theirs[name].shape[0] == batch
        np.testing.assert_allclose(theirs[name], ours[name], atol=1e-5, rtol=1e-5)


def test_graph_outputs_equal_the_numpy_scores(exported):
    module, combined, model, _, _, session = exported
    images = torch.rand(20, 1, 28, 28)
    out = run_onnx(session, images.numpy())
    feats = extract_features(model, images)
    np.testing.assert_allclose(out["score"], combined.score_features(feats), atol=1e-4)
    np.testing.assert_allclose(out["centroid_distance"], combined.centroid_.distances(feats), atol=1e-4)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["known_prob"], 1 / (1 + np.exp(-feats.known_logit)), atol=1e-5)


def test_contract_and_metadata(exported):
    _, _, _, path, _, session = exported
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
