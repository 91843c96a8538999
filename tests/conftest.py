import os
from pathlib import Path

import numpy as np
import pytest

from openset.config import Config
from openset.scores import Features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets: $OPENSET_DATA_DIR, else ../shared/data beside the repository."""
    root = Path(os.environ.get("OPENSET_DATA_DIR") or REPO.parent / "shared" / "data")
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
