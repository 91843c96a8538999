"""The model runtime (in the manner of MLServer's ``MLModel``): an opened artefact that answers batches. Every
constant (classes, input, layout, threshold, unknown label) comes from the model's manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from openset.calibration import decide
from openset.manifest import Artifact, ModelManifest, load_artifact

# Batches larger than this run in a worker thread, so health checks and small requests keep flowing.
OFFLOAD_IMAGES = 32


async def off_the_loop(call, images: np.ndarray):
    """``call(images)`` inline for small batches, in the thread pool for large ones."""
    if len(images) > OFFLOAD_IMAGES:
        return await run_in_threadpool(call, images)
    return call(images)


@dataclass(frozen=True)
class Prediction:
    label: str
    known: bool
    probs: dict[str, float]
    known_prob: float
    distance: float
    score: float
    threshold: float


class ModelRuntime:
    """The served model: an artefact opened by :func:`openset.manifest.load_artifact`, which has checked its
    manifest, hash and graph. Until :meth:`load` it is not ready."""

    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.artifact: Artifact | None = None

    def load(self) -> ModelRuntime:
        """Open the model directory (raises :class:`~openset.artifacts.ArtifactError` with a one-line reason)."""
        self.artifact = load_artifact(self.model_dir, self.threads)
        return self

    @property
    def ready(self) -> bool:
        return self.artifact is not None

    @property
    def manifest(self) -> ModelManifest:
        return self.artifact.manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph for ``images`` (the manifest's input shape)."""
        return self.artifact.run(images)

    def labels(self, probs: np.ndarray, score: np.ndarray) -> list[str]:
        return self.manifest.labels(decide(probs, score, self.manifest.threshold))

    def predict(self, images: np.ndarray) -> list[Prediction]:
        out = self.run(images)
        labels = self.labels(out["probs"], out[self.manifest.decision.output])
        classes, unknown, threshold = self.manifest.classes, self.manifest.unknown_label, self.manifest.threshold
        return [
            Prediction(
                label=label,
                known=label != unknown,
                probs={c: float(p) for c, p in zip(classes, out["probs"][i], strict=True)},
                known_prob=float(out["known_prob"][i]),
                distance=float(out["distance"][i]),
                score=float(out["score"][i]),
                threshold=threshold,
            )
            for i, label in enumerate(labels)
        ]
