"""The model runtime (in the manner of MLServer's ``MLModel``): an opened artefact that answers batches. Every
constant (classes, input, layout, threshold, unknown label) comes from the model's manifest."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from openset.calibration import decide
from openset.manifest import Artifact, ModelManifest, load_artifact
from service.batching import Batcher
from service.protocol import DeadlineHttpToolsProtocol

# Batches larger than this run in a worker thread, so health checks and small requests keep flowing.
OFFLOAD_IMAGES = 32


async def off_the_loop(call, images: np.ndarray):
    """``call(images)`` inline for small batches, in the thread pool for large ones."""
    if len(images) > OFFLOAD_IMAGES:
        return await run_in_threadpool(call, images)
    return call(images)


@dataclass
class InFlight:
    """The requests the server is answering: the gateway counts them, every model's batcher reads the count."""

    count: int = 0


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

    def __init__(self, model_dir: str | Path, threads: int = 1, batch_images: int = 0, batch_wait_ms: float = 0.0,
                 in_flight: InFlight | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.artifact: Artifact | None = None
        # Concurrent requests through the model together (service.batching); off with 0 or 1.
        self.batcher = Batcher(self.run, batch_images, batch_wait_ms) if batch_images > 1 else None
        self.in_flight = in_flight or InFlight()  # the server's requests in flight (service.gateway.Gateway)

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
        call shared with them; else inline (a lone request: no thread hop), or off the loop for a large batch."""
        batcher = self.batcher
        alone = DeadlineHttpToolsProtocol.requests_started() == 1  # the server has read no other request
        if batcher is not None and len(images) <= batcher.max_images and not alone:
            # One turn of the event loop first: requests that have arrived meanwhile get as far as here too (and
            # count as in flight), so that they meet in one call instead of queueing one behind the other.
            await asyncio.sleep(0)
            if self.in_flight.count > 1 or batcher.busy:
                return await batcher(images)
        return await off_the_loop(self.run, images)

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
