import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.serve_bench import free_port
from openset.config import Config
from openset.data import data_root
from openset.scores import Features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets, where the library finds them ($OPENSET_DATA_DIR, else ../shared/data beside the repo)."""
    root = data_root()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.fail(f"MNIST not found under {root}; set OPENSET_DATA_DIR")
    return root


@pytest.fixture
def tiny_config() -> Config:
    """A configuration that trains in seconds: one epoch, one narrow hidden layer."""
    return Config().override(
        model={"hidden": [32], "dropout": 0.0},
        optim={"epochs": 1, "batch_size": 256},
        scores={"knn_k": 3},
    )


def make_features(n_per_class: int = 50, classes: int = 3, dim: int = 4, spread: float = 0.3, seed: int = 0):
    """Features of well-separated classes: embeddings around one-hot centres, consistent logits."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = np.eye(classes, dim) * 5.0
    embedding = centres[labels] + rng.normal(0, spread, (len(labels), dim))
    logits = embedding[:, :classes] * 2.0
    known_logit = 3.0 - np.linalg.norm(embedding - centres[labels], axis=1)
    return Features(logits, embedding, known_logit), labels


def far_features(n: int = 20, classes: int = 3, dim: int = 4, seed: int = 1) -> Features:
    """Features of unknown-looking samples: embeddings between and away from the centres."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(2.0, 0.5, (n, dim))
    logits = np.full((n, classes), 1.0) + rng.normal(0, 0.1, (n, classes))
    known_logit = np.full(n, -3.0) + rng.normal(0, 0.1, n)
    return Features(logits, embedding, known_logit)


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    return REPO / "models" / "mnist-0to4"


@pytest.fixture(scope="session")
def shipped_runtime(shipped_model_dir):
    from service.runtime import ModelRuntime

    return ModelRuntime(shipped_model_dir).load()


@pytest.fixture
def model_copy(tmp_path, shipped_model_dir) -> Path:
    """A private copy of the shipped model (graph and metadata) whose files a test may break or replace."""
    import shutil

    target = tmp_path / "model"
    target.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(shipped_model_dir / name, target / name)
    return target


@contextlib.contextmanager
def running_server(model_dir: Path | None, **settings: str):
    """``openset-serve`` (uvicorn) on a free loopback port with ``OPENSET_*`` settings, serving ``model_dir`` (None:
    the repository's ``models/``, every model in it); yields (url, process). The server's stderr (its JSON logs)
    goes to a file, ``process.log``, read with ``process.log.read_text()``."""
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    port = free_port()
    served = {"OPENSET_MODEL_DIR": str(model_dir)} if model_dir else {"OPENSET_MODEL_REPOSITORY": str(REPO / "models")}
    env = {**{k: v for k, v in os.environ.items() if k != "OPENSET_MODEL_DIR"}, **served, "OPENSET_PORT": str(port),
           "OPENSET_HOST": "127.0.0.1", "OPENSET_LOG_LEVEL": "warning",
           **{f"OPENSET_{key.upper()}": value for key, value in settings.items()}}
    log = Path(tempfile.mkstemp(prefix="openset-serve-", suffix=".log")[1])
    with log.open("w") as stderr:
        process = subprocess.Popen([str(Path(sys.executable).parent / "openset-serve")], env=env, stderr=stderr)
    process.log = log
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not become ready")
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
        log.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def live_server(shipped_model_dir):
    """The real server with the shipped model; yields its base URL."""
    with running_server(shipped_model_dir) as (url, _):
        yield url


@pytest.fixture(scope="session")
def repository_server():
    """The real server with every model of ``models/`` (the default model unless a request names another)."""
    with running_server(None) as (url, _):
        yield url
