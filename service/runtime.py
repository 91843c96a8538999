"""The model runtime (in the manner of MLServer's ``MLModel``): an opened artefact that answers batches. Every
constant (classes, input, layout, threshold, unknown label) comes from the model's manifest."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openset.calibration import decide
from openset.manifest import Artifact, ModelManifest, load_artifact
from service.admission import Admission
from service.batching import Batcher

# A request alone in the server with at most this many images has its model call inline (no thread hop).
INLINE_IMAGES = 4


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

    def __init__(self, model_dir: str | Path, threads: int = 1, batch_images: int = 0,
                 admission: Admission | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.artifact: Artifact | None = None
        # The server's work pool, limits and requests in flight (service.admission; counted by the gateway).
        self.admission = admission or Admission()
        # Concurrent requests through the model together (service.batching); off with 0 or 1.
        self.batcher = Batcher(self.run, batch_images, self.admission) if batch_images > 1 else None

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

    async def outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for one request's images: with batching on and other requests in flight, from a model
        call shared with them; a lone request's few images inline (no thread hop); else in the work pool."""
        batcher, admission = self.batcher, self.admission
        if batcher is not None and len(images) <= batcher.max_images:
            # One turn of the event loop first: requests that have arrived meanwhile get as far as here too (and
            # count as in flight), so that they meet in one call instead of queueing one behind the other.
            await asyncio.sleep(0)
            if admission.requests > 1 or batcher.busy:
                return await batcher(images)
        if admission.requests <= 1 and len(images) <= INLINE_IMAGES:  # alone (0: outside a server, in tests)
            return self.run(images)
        return await admission.run(self.run, images)

    def predict(self, images: np.ndarray) -> list[Prediction]:
        return self.decisions(self.run(images))

    def decisions(self, out: dict[str, np.ndarray]) -> list[Prediction]:
        """The decision and the scores of every image, from the graph's outputs."""
        manifest = self.manifest
        labels = self.labels(out["probs"], out[manifest.decision.output])
        classes, unknown, threshold = manifest.classes, manifest.unknown_label, manifest.threshold
        scores = (out[name].tolist() for name in ("probs", "known_prob", "distance", "score"))
        columns = zip(labels, *scores, strict=True)
        return [
            Prediction(label=label, known=label != unknown, probs=dict(zip(classes, probs, strict=True)),
                       known_prob=known_prob, distance=distance, score=score, threshold=threshold)
            for label, probs, known_prob, distance, score in columns
        ]
