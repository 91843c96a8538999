"""Training faults: an interrupted run leaves nothing in ``--out``, and ``--resume`` ends bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from openset.config import Config, ConfigError
from openset.data import open_set_data
from tests.test_train import toy_data
from training.checkpoints import load_checkpoint
from training.train import fit

# Dropout, augmentation and synthetic negatives stay on (the defaults): every RNG is exercised.
TINY = Config().override(name="tiny", model={"hidden": [16]}, optim={"epochs": 3, "batch_size": 512},
                         scores={"knn_k": 3}, evaluation={"shift_per_class": 0})
EXE = Path(sys.executable).parent / "openset"


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def openset(*args: str, cwd: Path | None = None, data_dir: Path | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, **({"OPENSET_DATA_DIR": str(data_dir)} if data_dir else {})}
    return subprocess.Popen([str(EXE), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def data(data_dir):
    return open_set_data(TINY.data, TINY.seed, data_dir)


@pytest.fixture(scope="module")
def uninterrupted(data):
    model, history = fit(TINY, data)
    return model.state_dict(), history


@pytest.mark.parametrize("stop_after", [1, 2])
def test_resume_is_bit_identical_to_an_uninterrupted_run(data, uninterrupted, tmp_path, stop_after):
    checkpoint = tmp_path / "last.pt"

    def ctrl_c(row):
        if row["epoch"] == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(TINY, data, checkpoint=checkpoint, on_epoch=ctrl_c)
    state = load_checkpoint(checkpoint, TINY)
    assert state["epoch"] == stop_after and len(state["history"]) == stop_after
    model, history = fit(TINY, data, checkpoint=checkpoint, resume=state)
    assert_same_weights(model.state_dict(), uninterrupted[0])
    assert history == uninterrupted[1]


def interrupt_training(tmp_path: Path, data_dir: Path, signum: int) -> tuple[tuple[str, ...], str]:
    """Start ``openset train`` on TINY, send ``signum`` once the first checkpoint is written, check the exit."""
    config, out, checkpoints = tmp_path / "tiny.json", tmp_path / "models" / "tiny", tmp_path / "checkpoints"
    config.write_text(json.dumps(TINY.to_dict()))
    args = ("train", "--config", str(config), "--out", str(out), "--checkpoint-dir", str(checkpoints), "--no-plots")
    process = openset(*args, data_dir=data_dir)
    deadline = time.monotonic() + 240
    while not (checkpoints / "last.pt").exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    process.send_signal(signum)
    code, stderr = finish(process)
    assert code == 128 + signum, stderr[-2000:]
    # One line says what happened; before it, the data root was announced ("data: ...").
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 2 and lines[0].startswith("data: "), stderr[-2000:]
    assert "interrupted after epoch" in lines[1] and "rerun with --resume" in lines[1]
    # No staging directory or temporary file beside the artefact or the checkpoint.
    assert list(tmp_path.rglob(".*")) == []
    assert [p.name for p in checkpoints.iterdir()] == ["last.pt"]
    return args, stderr


def test_ctrl_c_leaves_no_model_and_resume_ends_bit_identical(tmp_path, data_dir, uninterrupted):
    args, _ = interrupt_training(tmp_path, data_dir, signal.SIGINT)
    out, checkpoints = tmp_path / "models" / "tiny", tmp_path / "checkpoints"
    assert not out.exists()

    code, stderr = finish(openset(*args, "--resume", data_dir=data_dir))
    assert code == 0, stderr[-2000:]
    assert {"model.onnx", "model.json", "checkpoint.pt", "report.json"} <= {p.name for p in out.iterdir()}
    assert not checkpoints.exists(), "a finished run's checkpoint must not be left for a later --resume"
    shipped = torch.load(out / "checkpoint.pt", weights_only=True)
    assert_same_weights(shipped["model"], uninterrupted[0])
    assert shipped["history"] == uninterrupted[1]


def test_sigterm_leaves_the_previous_model_untouched(tmp_path, data_dir):
    out = tmp_path / "models" / "tiny"
    out.mkdir(parents=True)
    (out / "model.json").write_text("the previous model")
    interrupt_training(tmp_path, data_dir, signal.SIGTERM)
    assert [p.name for p in out.iterdir()] == ["model.json"]
    assert (out / "model.json").read_text() == "the previous model"


def test_resume_with_a_changed_config_is_refused(tmp_path):
    small = Config().override(model={"hidden": [8]}, optim={"epochs": 1, "batch_size": 32})
    fit(small, toy_data(), checkpoint=tmp_path / "ckpt" / "last.pt")
    config = tmp_path / "changed.json"
    config.write_text(json.dumps(small.override(optim={"lr": 0.1}).to_dict()))

    code, stderr = finish(openset("train", "--config", str(config), "--out", str(tmp_path / "m"),
                                  "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume"))
    assert code == 2
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "config differs" in stderr and "optim.lr: 0.002 -> 0.1" in stderr
    assert not (tmp_path / "m").exists()
    # An override on the command line changes the config too.
    with pytest.raises(ConfigError, match="optim.epochs: 1 -> 2"):
        load_checkpoint(tmp_path / "ckpt" / "last.pt", small.override(optim={"epochs": 2}))


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    # Run from tmp_path: the default checkpoint directory is runs/checkpoints/<config name>.
    code, stderr = finish(openset("train", "--config", str(config), "--out", "m", "--resume", cwd=tmp_path))
    assert code == 2
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert "no checkpoint to resume at runs/checkpoints/tiny/last.pt" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(path, TINY)
