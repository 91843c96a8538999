"""The model runtime (in the manner of MLServer's ``MLModel``): loads ``model.onnx`` + ``model.json``
and answers batches. Every constant (classes, threshold, unknown label) comes from the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from starlette.concurrency import run_in_threadpool

from openset.artifacts import sha256_file
from openset.calibration import UNKNOWN, decide
from openset.contract import INPUT, OUTPUTS, UNKNOWN_LABEL, check_contract, check_format

# Batches larger than this run in a worker thread, so health checks and small requests keep flowing.
OFFLOAD_IMAGES = 32


async def off_the_loop(call, images: np.ndarray):
    """``call(images)`` inline for small batches, in the thread pool for large ones."""
    if len(images) > OFFLOAD_IMAGES:
        return await run_in_threadpool(call, images)
    return call(images)


class ModelLoadError(RuntimeError):
    """The model directory is missing, corrupt or breaks the contract; the message is one line."""


@dataclass(frozen=True)
class Prediction:
    label: str
    known: bool
    probs: dict[str, float]
    known_prob: float
    centroid_distance: float
    score: float
    threshold: float


class ModelRuntime:
    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.session: ort.InferenceSession | None = None
        self.meta: dict[str, Any] = {}

    def load(self) -> ModelRuntime:
        onnx_path, meta_path = self.model_dir / "model.onnx", self.model_dir / "model.json"
        for path in (onnx_path, meta_path):
            if not path.is_file():
                raise ModelLoadError(f"model file missing: {path}")
        try:
            meta = json.loads(meta_path.read_text())
            classes, threshold = list(meta["classes"]), float(meta["threshold"])
            box = int(meta["input"]["layout"]["box"])
            if not 1 <= box <= 28:
                raise ValueError(f"layout box {box} outside 1..28")
            expected_sha = meta["onnx_sha256"]
            actual_sha = sha256_file(onnx_path)
        except OSError as err:
            raise ModelLoadError(f"cannot read the model: {err.strerror}: {err.filename}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(f"{meta_path}: unreadable metadata ({type(err).__name__}: {err})") from None
        try:
            check_format(meta)
        except ValueError as err:
            raise ModelLoadError(f"{meta_path}: {err}") from None
        if actual_sha != expected_sha:
            raise ModelLoadError(f"{onnx_path}: SHA-256 does not match model.json (corrupt or replaced file)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            check_contract(session, len(classes))
        except Exception as err:  # onnxruntime raises its own exception types for bad graphs
            raise ModelLoadError(f"{onnx_path}: {str(err).splitlines()[0]}") from None
        self.session, self.meta = session, meta
        self.classes, self.threshold = classes, threshold
        self.box = box  # the digit's box in the model's input: people's pictures are laid out to it
        self.unknown_label = meta.get("unknown_label", UNKNOWN_LABEL)
        return self

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def name(self) -> str:
        return self.meta.get("name", "model")

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "1"))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs for ``images`` float32 ``[N, 1, 28, 28]``; one model call."""
        values = self.session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(OUTPUTS, values, strict=True))

    def output_shapes(self) -> dict[str, list[int]]:
        """The graph's output shapes, symbolic dimensions as -1 (for v2 metadata)."""
        return {o.name: [d if isinstance(d, int) else -1 for d in o.shape] for o in self.session.get_outputs()}

    def labels(self, probs: np.ndarray, score: np.ndarray) -> list[str]:
        return [self.unknown_label if i == UNKNOWN else self.classes[i] for i in decide(probs, score, self.threshold)]

    def predict(self, images: np.ndarray) -> list[Prediction]:
        out = self.run(images)
        labels = self.labels(out["probs"], out["score"])
        return [
            Prediction(
                label=label,
                known=label != self.unknown_label,
                probs={c: float(p) for c, p in zip(self.classes, out["probs"][i], strict=True)},
                known_prob=float(out["known_prob"][i]),
                centroid_distance=float(out["centroid_distance"][i]),
                score=float(out["score"][i]),
                threshold=self.threshold,
            )
            for i, label in enumerate(labels)
        ]
