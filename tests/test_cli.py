"""The ``openset`` console script end to end on a tiny configuration."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from openset.artifacts import sha256_file
from openset.config import Config

from .conftest import REPO


def run(*args, env=None, data_dir=None):
    environment = {**os.environ, **(env or {})}
    if data_dir is not None:
        environment["OPENSET_DATA_DIR"] = str(data_dir)
    # The console script installed beside this interpreter (the venv's bin/).
    exe = Path(sys.executable).parent / "openset"
    assert exe.exists(), "the openset console script is not installed"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=environment, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    from openset.config import Config

    tmp = tmp_path_factory.mktemp("cli")
    # A small shift benchmark: its figures are checked on the shipped model (tests/test_shipped_model.py).
    cfg = Config().override(model={"hidden": [32], "dropout": 0.0}, optim={"epochs": 1, "batch_size": 256},
                            scores={"knn_k": 3}, evaluation={"shift_per_class": 2})
    config = tmp / "tiny.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = tmp / "model"
    # Not the default runs/checkpoints/<name>: a real run of the same config name may be using it.
    result = run("train", "--config", str(config), "--out", str(out), "--checkpoint-dir", str(tmp / "checkpoints"),
                 data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp / "checkpoints").exists()  # deleted once the artefacts are written
    return tmp, out


def test_train_writes_a_complete_artefact(trained):
    _, out = trained
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.json", "checkpoint.pt", "report.json", "report.md", "figures"} <= names
    meta = json.loads((out / "model.json").read_text())
    assert meta["onnx_sha256"] == sha256_file(out / "model.onnx")
    assert meta["classes"] == ["0", "1", "2", "3", "4"] and meta["unknown_label"] == "other"
    assert meta["provenance"]["config"]["model"]["hidden"] == [32]
    report = json.loads((out / "report.json").read_text())
    from openset.scores import SCORES

    assert set(report["scores"]) == set(SCORES)
    parity = report["parity"]  # the stored graph (the default export.weights) against torch on every test image
    assert parity["weights"] == meta["provenance"]["config"]["export"]["weights"] == Config().export.weights
    assert parity["samples"] > 20_000 and parity["decisions_agreeing"] >= 0.99 and parity["batch_spread"] <= 1e-5
    assert 0.94 <= report["val_accepted"] <= 0.96
    assert {"learning_curves", "confusion_matrix", "score_histograms", "samples", "worst_mistakes", "shift_examples",
            "shift_bars"} <= set(report["figures"])
    assert report["robustness"]["samples"] == {"known": 10, "unknown": 10}
    assert "## Shift benchmark" in (out / "report.md").read_text()
    assert all((out / path).stat().st_size > 1000 for path in report["figures"].values())
    # Nothing half-written is left beside the artefact.
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_onnx_decisions_follow_the_threshold_rule(trained):
    _, out = trained
    meta = json.loads((out / "model.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, score = session.run(["probs", "score"], {"image": np.random.default_rng(0).random((64, 1, 28, 28),
                                                                                           dtype=np.float32)})
    # Noise must be scored far below the known validation threshold.
    assert np.all(score < meta["decision"]["threshold"])


def test_evaluate_re_measures_the_recorded_figures(trained, data_dir):
    tmp, out = trained
    result = run("evaluate", "--model", str(out), "--out", str(tmp / "eval.json"), data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads((tmp / "eval.json").read_text())
    recorded = json.loads((out / "model.json").read_text())["metrics"]
    assert measured["known_accuracy"] == pytest.approx(recorded["known_accuracy"])


def test_evaluate_refuses_a_tampered_model(trained, data_dir, tmp_path):
    _, out = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    result = run("evaluate", "--model", str(copy), data_dir=data_dir)
    assert result.returncode == 2
    assert "SHA-256" in result.stderr and "Traceback" not in result.stderr


def test_export_from_checkpoint_reproduces_the_model(trained, data_dir):
    """The README's re-export, exactly as written, on a copy of the tiny model where the shipped one would be:
    it rewrites the model directory in place, from the checkpoint inside it."""
    tmp, out = trained
    command = "openset export --checkpoint models/mnist-0to4/checkpoint.pt --out models/mnist-0to4"
    assert f"`{command}`" in (REPO / "README.md").read_text()
    place = tmp / "readme"
    shutil.copytree(out, place / "models" / "mnist-0to4")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the venv's console scripts first
    env = {**os.environ, "PATH": path, "OPENSET_DATA_DIR": str(data_dir)}
    result = subprocess.run(["bash", "-c", command], cwd=place, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    again = place / "models" / "mnist-0to4"
    assert (again / "checkpoint.pt").is_file() and (again / "report.md").is_file()
    first = json.loads((out / "model.json").read_text())
    second = json.loads((again / "model.json").read_text())
    assert second["decision"]["threshold"] == pytest.approx(first["decision"]["threshold"], abs=1e-6)
    assert second["metrics"] == pytest.approx(first["metrics"], abs=1e-6)


def test_export_refits_the_scores_with_other_settings(trained, data_dir):
    tmp, out = trained
    refit = tmp / "refit"
    result = run("export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(refit), "--no-plots",
                 "--set", "scores.knn_k=1", "scores.knn_bank=64", data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads((out / "model.json").read_text())
    meta = json.loads((refit / "model.json").read_text())
    config, before = meta["provenance"]["config"], first["provenance"]["config"]
    assert (config["scores"]["knn_k"], config["scores"]["knn_bank"]) == (1, 64)
    assert {k: v for k, v in config.items() if k != "scores"} == {k: v for k, v in before.items() if k != "scores"}
    distance = next(o for o in meta["outputs"] if o["name"] == "distance")
    assert "1-th nearest" in distance["description"]
    import onnx

    graph = onnx.load(str(refit / "model.onnx")).graph
    norms = [list(t.dims) for t in graph.initializer if t.name == "distance.squared_norms"]
    assert norms == [[64]]  # one per embedding of the bank: a bank of 64
    assert meta["decision"]["threshold"] != pytest.approx(first["decision"]["threshold"], abs=1e-6)


def test_export_refuses_to_change_what_the_weights_were_trained_with(trained, data_dir, tmp_path):
    _, out = trained
    result = run("export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "m"),
                 "--set", "optim.epochs=3", data_dir=data_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "optim" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_bad_config_is_one_line_and_exit_2(tmp_path, data_dir):
    config = tmp_path / "bad.json"
    config.write_text('{"optim": {"name": "nesterov-ish"}}')
    result = run("train", "--config", str(config), "--out", str(tmp_path / "m"), data_dir=data_dir)
    assert result.returncode == 2
    assert "optim.name" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_missing_data_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "ok.json"
    config.write_text("{}")
    result = run("train", "--config", str(config), "--out", str(tmp_path / "m"),
                 env={"OPENSET_DATA_DIR": str(tmp_path / "empty"), "OPENSET_DOWNLOAD": "0"})
    assert result.returncode == 2
    assert "MNIST not found" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "evaluate", "export"):
        assert command in result.stdout


@pytest.mark.parametrize("change, message", [
    (lambda meta: meta["metrics"].update(auroc_renamed=meta["metrics"].pop("auroc_uniform_noise")), "auroc_renamed"),
    (lambda meta: meta.update(format_version=99), "format_version 99"),
])
def test_evaluate_refuses_what_it_cannot_compare(trained, data_dir, tmp_path, change, message):
    _, out = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    meta = json.loads((copy / "model.json").read_text())
    change(meta)
    (copy / "model.json").write_text(json.dumps(meta))
    result = run("evaluate", "--model", str(copy), data_dir=data_dir)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
