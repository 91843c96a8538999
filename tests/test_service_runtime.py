"""Model loading: a missing, corrupt or contract-breaking model refuses to load with one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from openset.artifacts import ArtifactError, sha256_file
from service.runtime import ModelRuntime


def test_loads_and_reads_everything_from_metadata(shipped_model_dir):
    runtime = ModelRuntime(shipped_model_dir).load()
    meta = json.loads((shipped_model_dir / "model.json").read_text())
    assert runtime.ready
    assert list(runtime.manifest.classes) == meta["classes"]
    assert runtime.manifest.threshold == meta["decision"]["threshold"]
    assert runtime.manifest.unknown_label == meta["unknown_label"]
    predictions = runtime.predict(np.zeros((3, *meta["input"]["shape"][1:]), np.float32))
    assert len(predictions) == 3 and all(p.threshold == meta["decision"]["threshold"] for p in predictions)
    # decision = score >= threshold, then argmax
    for p in predictions:
        assert p.known == (p.score >= p.threshold)
        assert p.label == (max(p.probs, key=p.probs.get) if p.known else "other")


def test_missing_model(tmp_path):
    with pytest.raises(ArtifactError, match="missing"):
        ModelRuntime(tmp_path / "nothing").load()


def test_corrupt_onnx_fails_the_checksum(model_copy):
    with open(model_copy / "model.onnx", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(ArtifactError, match="SHA-256"):
        ModelRuntime(model_copy).load()


def test_unreadable_metadata(model_copy):
    (model_copy / "model.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not JSON"):
        ModelRuntime(model_copy).load()


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(format_version=1), "format_version 1"),
    (lambda m: m.pop("format_version"), "format_version None"),
    (lambda m: m["decision"].pop("threshold"), "decision.threshold"),
    (lambda m: m.update(classes=["0", "1", "2"]), "3 classes need"),
    (lambda m: m.update(classes=["0", "1", "2", "3", "other"]), "unknown label"),
    (lambda m: m["input"]["layout"].update(box=40), "box 40"),
    (lambda m: m["input"].update(shape=[-1, 1, 32, 32]), "side 28"),
])
def test_a_manifest_that_does_not_hold_is_refused_in_one_line(model_copy, change, message):
    meta = json.loads((model_copy / "model.json").read_text())
    change(meta)
    (model_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message) as err:
        ModelRuntime(model_copy).load()
    assert "\n" not in str(err.value)


def test_a_graph_of_another_size_than_its_manifest_is_refused(model_copy):
    """The graph is checked against the manifest, not against constants: a manifest that says 32x32 images for
    this 28x28 graph is refused."""
    meta = json.loads((model_copy / "model.json").read_text())
    meta["input"].update(shape=[-1, 1, 32, 32], layout={**meta["input"]["layout"], "side": 32})
    (model_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="graph input"):
        ModelRuntime(model_copy).load()


def test_contract_breaking_graph_is_refused(model_copy):
    proto = onnx.load(str(model_copy / "model.onnx"))
    del proto.graph.output[-1]  # drop 'score'
    onnx.save(proto, str(model_copy / "model.onnx"))
    meta = json.loads((model_copy / "model.json").read_text())
    meta["onnx_sha256"] = sha256_file(model_copy / "model.onnx")
    (model_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="lacks the manifest's output 'score'"):
        ModelRuntime(model_copy).load()


def test_server_refuses_to_start_with_one_line(tmp_path):
    exe = Path(sys.executable).parent / "openset-serve"
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                            env={"OPENSET_MODEL_DIR": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("openset-serve: cannot start: model file missing")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_serving_path_never_imports_torch(shipped_model_dir):
    code = ("import sys; from fastapi.testclient import TestClient; from service.main import create_app; "
            "from service.settings import Settings; "
            f"c = TestClient(create_app(Settings(model_dir={str(shipped_model_dir)!r}))); "
            "c.__enter__(); assert c.post('/v1/predict', json={'image': [[0]*28]*28}).status_code == 200; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr[-500:]


def test_unreadable_model_is_a_load_error(model_copy):
    import os

    if os.geteuid() == 0:  # root reads any file: use one whose read fails anyway
        (model_copy / "model.json").unlink()
        (model_copy / "model.json").symlink_to("/proc/self/mem")
    else:
        (model_copy / "model.json").chmod(0)
    with pytest.raises(ArtifactError, match="cannot read"):
        ModelRuntime(model_copy).load()
