"""The model manifest (``model.json``): the one description of an artefact, written by training, read by everything.

:class:`ModelManifest` is the contract between ``openset train`` and every consumer (the service, ``openset
evaluate``, ``openset robustness``, the tests): classes, the input tensor and how people's pictures are laid out
into it, the output tensors, the decision (output, threshold, rule), the graph's SHA-256, the figures and where
they came from. :func:`load_artifact` is the one way to open an artefact directory: it checks the format version,
the hash, and the ONNX graph against the manifest (not against constants of this code), and :meth:`Artifact.run`
is the one ONNX runner. A model of another size or class set therefore needs no change to any consumer.

Torch-free; onnxruntime is imported when an artefact is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openset.artifacts import ArtifactError, sha256_file

FORMAT_VERSION = 2
MANIFEST, GRAPH = "model.json", "model.onnx"


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Spec):
    """One tensor of the graph; ``-1`` is a dimension of any size (the batch)."""

    name: str
    datatype: Literal["FP32"] = "FP32"
    shape: tuple[int, ...]
    description: str = ""


class Layout(_Spec):
    """How a digit sits in the input, as in MNIST: its ink box scaled to fit ``box`` x ``box`` pixels, aspect kept,
    its centre of mass at the centre of the ``side`` x ``side`` field. The service lays out pictures by it."""

    side: int = Field(ge=2)
    box: int = Field(ge=1)
    centre: Literal["centre of mass"] = "centre of mass"

    @model_validator(mode="after")
    def _box_fits(self) -> Layout:
        if self.box > self.side:
            raise ValueError(f"layout box {self.box} is larger than the side {self.side}")
        return self


class InputSpec(TensorSpec):
    """The image input: ``[-1, 1, side, side]`` grey levels in ``range``, white digit on black."""

    range: tuple[float, float] = (0.0, 1.0)
    polarity: Literal["white digit on black"] = "white digit on black"
    layout: Layout

    @model_validator(mode="after")
    def _square_image(self) -> InputSpec:
        if self.shape != (-1, 1, self.layout.side, self.layout.side):
            raise ValueError(f"input shape {list(self.shape)} is not [-1, 1, side, side] with the layout's side "
                             f"{self.layout.side}")
        return self

    @property
    def side(self) -> int:
        return self.layout.side


class DecisionSpec(_Spec):
    """Known iff ``outputs[output] >= threshold``, then the argmax of ``probs``; else the unknown label."""

    output: str
    threshold: float
    target_tpr: float = Field(gt=0, le=1)
    rule: str


class Provenance(_Spec):
    """Where the model came from: the protocol, the whole training config, the data sizes, library versions."""

    protocol: str
    config: dict[str, Any]
    data: dict[str, Any]
    versions: dict[str, str]


class ModelManifest(_Spec):
    format_version: int
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    classes: tuple[str, ...] = Field(min_length=2)
    unknown_label: str
    input: InputSpec
    outputs: tuple[TensorSpec, ...]
    decision: DecisionSpec
    metrics: dict[str, float]
    provenance: Provenance
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version}; this version of openset reads {FORMAT_VERSION}")
        if len(set(self.classes)) != len(self.classes) or self.unknown_label in self.classes:
            raise ValueError("classes must be distinct and differ from the unknown label")
        names = [spec.name for spec in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"output names repeat: {names}")
        if self.decision.output not in names or "probs" not in names:
            raise ValueError(f"the outputs {names} lack the decision's {self.decision.output!r} or 'probs'")
        if self.output("probs").shape != (-1, len(self.classes)):
            raise ValueError(f"output probs has shape {list(self.output('probs').shape)}; "
                             f"{len(self.classes)} classes need [-1, {len(self.classes)}]")
        return self

    def output(self, name: str) -> TensorSpec:
        return next(spec for spec in self.outputs if spec.name == name)

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    def labels(self, decided: np.ndarray) -> list[str]:
        """Class indices from :func:`openset.calibration.decide` (-1 = unknown) as labels."""
        names = [*self.classes, self.unknown_label]  # index -1 is the unknown label
        return [names[i] for i in decided.tolist()]


def _matches(graph_shape: list, spec_shape: tuple[int, ...]) -> bool:
    """A graph's shape (symbolic dimensions as strings) against a spec's (-1 = any size)."""
    return len(graph_shape) == len(spec_shape) and all(
        want == -1 or got == want for got, want in zip(graph_shape, spec_shape, strict=True))


def check_graph(session: Any, manifest: ModelManifest) -> None:
    """Raise ``ValueError`` unless an onnxruntime session has the manifest's input and outputs."""
    inputs = session.get_inputs()
    spec = manifest.input
    if len(inputs) != 1 or inputs[0].name != spec.name or not _matches(inputs[0].shape, spec.shape):
        found = [(i.name, i.shape) for i in inputs]
        raise ValueError(f"graph input {found} is not the manifest's {spec.name!r} {list(spec.shape)}")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    for spec in manifest.outputs:
        if spec.name not in outputs:
            raise ValueError(f"graph lacks the manifest's output {spec.name!r}")
        if not _matches(outputs[spec.name], spec.shape):
            raise ValueError(f"graph output {spec.name!r} has shape {outputs[spec.name]}, the manifest says "
                             f"{list(spec.shape)}")


def read_manifest(path: str | Path) -> ModelManifest:
    """``model.json`` as a :class:`ModelManifest`, or an :class:`ArtifactError` in one line."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror}") from None
    except ValueError as err:
        raise ArtifactError(f"{path}: not JSON ({err})") from None
    found = raw.get("format_version") if isinstance(raw, dict) else None
    if found != FORMAT_VERSION:  # before the fields: another format's fields would only confuse
        raise ArtifactError(f"{path}: format_version {found!r}; this version of openset reads {FORMAT_VERSION}")
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as err:
        from openset.config import problems

        raise ArtifactError(f"{path}: {problems(err.errors())}") from None


@dataclass(frozen=True)
class Artifact:
    """An opened artefact directory: its manifest and an onnxruntime session of its graph."""

    directory: Path
    manifest: ModelManifest
    session: Any

    def run(self, images: np.ndarray, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Every output of the graph for ``images`` (the manifest's input shape), batch by batch."""
        return run_session(self.session, self.manifest.input.name, self.manifest.output_names, images, batch_size)


def run_session(session: Any, input_name: str, outputs: list[str], images: np.ndarray,
                batch_size: int = 4096) -> dict[str, np.ndarray]:
    """The named outputs of an onnxruntime session, ``batch_size`` images per call."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    parts = [session.run(outputs, {input_name: images[i : i + batch_size]}) for i in range(0, len(images), batch_size)]
    if len(parts) == 1:  # (the service's case: no copy)
        return dict(zip(outputs, parts[0], strict=True))
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(outputs)}


def load_artifact(directory: str | Path, threads: int | None = None) -> Artifact:
    """Open an artefact directory: the manifest, the graph's SHA-256 against it, then the graph's tensors against
    it. Every failure is an :class:`ArtifactError` with a one-line message."""
    import onnxruntime as ort

    directory = Path(directory)
    graph = directory / GRAPH
    for path in (directory / MANIFEST, graph):
        if not path.is_file():
            raise ArtifactError(f"model file missing: {path}")
    manifest = read_manifest(directory / MANIFEST)
    try:
        sha = sha256_file(graph)
    except OSError as err:
        raise ArtifactError(f"cannot read {graph}: {err.strerror}") from None
    if sha != manifest.onnx_sha256:
        raise ArtifactError(f"{graph}: SHA-256 does not match {MANIFEST} (corrupt or replaced file)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    try:
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        check_graph(session, manifest)
    except Exception as err:  # onnxruntime raises its own exception types for bad graphs
        raise ArtifactError(f"{graph}: {str(err).splitlines()[0]}") from None
    return Artifact(directory, manifest, session)
