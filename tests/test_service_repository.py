"""A model repository: every model directory of a folder served side by side, by name (v2 paths, v1's ``?model=``),
with its default, per-model reloads and metrics, and the start-up refusals of a repository that cannot be served."""

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openset.artifacts import ArtifactError, atomic_write_json
from service.lifecycle import load_repository
from service.main import create_app
from service.settings import Settings

ADMIN = {"X-API-Key": "admin-secret"}
DIGIT = {"image": (np.eye(28) * 255).tolist()}


def add_model(repository, shipped_model_dir, folder: str, name: str, version: str = "1") -> None:
    """The shipped model under another folder and name (its graph unchanged: the hash still matches)."""
    target = repository / folder
    target.mkdir()
    for file in ("model.onnx", "model.json"):
        shutil.copy(shipped_model_dir / file, target / file)
    manifest = json.loads((target / "model.json").read_text())
    atomic_write_json(target / "model.json", {**manifest, "name": name, "version": version})


@pytest.fixture
def repository(tmp_path, shipped_model_dir):
    root = tmp_path / "models"
    root.mkdir()
    add_model(root, shipped_model_dir, "first", "alpha")
    add_model(root, shipped_model_dir, "second", "beta", "7")
    (root / "notes").mkdir()  # a folder without a manifest is not a model
    return root


def serve(repository, **settings):
    return TestClient(create_app(Settings(model_repository=repository, default_model="beta", admin_key="admin-secret",
                                          **settings)))


def test_every_model_is_served_by_name_and_v1_answers_with_the_default(repository):
    with serve(repository) as client:
        index = client.get("/v2/models").json()
        assert index == {"default": "beta", "models": [{"name": "beta", "version": "7", "state": "READY"},
                                                       {"name": "alpha", "version": "1", "state": "READY"}]}
        default = client.post("/v1/predict", json=DIGIT)
        assert default.json()["model"] == {"name": "beta", "version": "7"}
        assert default.headers["x-model-version"] == "beta/7"
        picked = client.post("/v1/predict", params={"model": "alpha"}, json=DIGIT)
        assert picked.json()["model"]["name"] == "alpha" and picked.headers["x-model-version"] == "alpha/1"
        assert picked.json()["scores"] == default.json()["scores"]  # the same graph under two names
        body = {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
        for name in ("alpha", "beta"):
            answer = client.post(f"/v2/models/{name}/infer", json=body)
            assert answer.status_code == 200 and answer.json()["model_name"] == name
            assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
        assert client.get("/v2/health/ready").status_code == 200


def test_a_model_not_served_is_a_404_naming_the_served_ones(repository):
    with serve(repository) as client:
        for response in (client.post("/v1/predict", params={"model": "gamma"}, json=DIGIT),
                         client.post("/v2/models/gamma/infer", json={"inputs": []}),
                         client.get("/v2/models/gamma")):
            assert response.status_code == 404
            assert response.json() == {"error": "unknown model 'gamma'; this server serves 'alpha', 'beta'"}


def test_metrics_count_every_models_decisions_apart(repository):
    with serve(repository) as client:
        client.post("/v1/predict", json=DIGIT)
        client.post("/v1/predict", params={"model": "alpha"}, json=DIGIT)
        client.post("/v1/predict", params={"model": "alpha"}, json=DIGIT)
        text = client.get("/metrics").text
    counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("openset_predictions_total{")}
    assert sum(v for k, v in counts.items() if 'model="alpha"' in k) == 2
    assert sum(v for k, v in counts.items() if 'model="beta"' in k) == 1
    assert 'openset_model_info{name="alpha"' in text and 'openset_model_info{name="beta"' in text


def test_one_model_reloads_alone_and_a_broken_one_keeps_its_old_model(repository):
    with serve(repository) as client:
        manifest = json.loads((repository / "first" / "model.json").read_text())
        atomic_write_json(repository / "first" / "model.json", {**manifest, "version": "2"})
        atomic_write_json(repository / "second" / "model.json", {**manifest, "name": "beta", "version": "8"})
        reloaded = client.post("/admin/models/alpha/reload", headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        versions = {m["name"]: m["version"] for m in client.get("/v2/models").json()["models"]}
        assert versions == {"alpha": "2", "beta": "7"}  # beta's directory changed too, but only alpha was asked
        (repository / "second" / "model.onnx").write_bytes(b"not a graph")
        refused = client.post("/admin/reload", headers=ADMIN)
        assert refused.status_code == 409 and "second" in refused.json()["error"]
        versions = {m["name"]: m["version"] for m in client.get("/v2/models").json()["models"]}
        assert versions == {"alpha": "2", "beta": "7"}  # beta keeps serving its old model
        assert client.post("/v1/predict", json=DIGIT).headers["x-model-version"] == "beta/7"
        assert 'openset_model_reloads_total{model="second",result="refused"} 1.0' in client.get("/metrics").text


def test_a_reload_of_the_repository_picks_up_a_new_model(repository, shipped_model_dir):
    with serve(repository) as client:
        add_model(repository, shipped_model_dir, "third", "gamma")
        assert client.post("/admin/reload", headers=ADMIN).status_code == 200
        assert [m["name"] for m in client.get("/v2/models").json()["models"]] == ["beta", "alpha", "gamma"]
        assert client.post("/v1/predict", params={"model": "gamma"}, json=DIGIT).status_code == 200


def test_a_repository_that_cannot_be_served_is_refused_at_start_up(repository, shipped_model_dir, tmp_path):
    with pytest.raises(ArtifactError, match="default model 'delta'"):
        load_repository(Settings(model_repository=repository, default_model="delta"))
    add_model(repository, shipped_model_dir, "third", "alpha")
    with pytest.raises(ArtifactError, match="two models are named 'alpha'"):
        load_repository(Settings(model_repository=repository, default_model="beta"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no model in the repository"):
        load_repository(Settings(model_repository=tmp_path / "empty"))
    with pytest.raises(ArtifactError, match="model repository not found"):
        load_repository(Settings(model_repository=tmp_path / "nowhere"))


def test_one_model_directory_is_the_default_whatever_its_name(shipped_model_dir):
    served = load_repository(Settings(model_dir=shipped_model_dir, default_model="anything"))
    assert list(served.models) == ["mnist-0to4"] and served.default_name == "mnist-0to4"
