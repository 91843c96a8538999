"""The API's data models: request and response bodies, as validated and as the OpenAPI schema documents them.

The request bodies depend on the served model (an image is ``side`` x ``side``, the outputs are its manifest's):
:func:`array_models` validates v1 arrays for a side, and :func:`request_components` documents every request body
for a manifest (``service.main`` puts them in the OpenAPI schema of the model being served). The v2 protocol is
decoded by hand (``service.codec``); its models here document the responses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

from openset.contract import INPUT, MNIST_SIDE, OUTPUTS
from openset.manifest import ModelManifest
from service.codec import DATATYPES

# A grey level: a finite JSON number in [0, 255] (or [0, 1]); strict: lax mode would take "1" and true as pixels.
Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False, strict=True)]


@lru_cache
def array_models(side: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """The v1 JSON bodies for a model of ``side`` x ``side`` images: ``{"image": ...}`` and ``{"images": [...]}``."""
    row = Annotated[list[Pixel], Field(min_length=side, max_length=side)]
    image = Annotated[list[row], Field(min_length=side, max_length=side)]
    forbid = ConfigDict(extra="forbid")
    one = create_model("ArrayImage", __config__=forbid, image=(image, Field(
        description=f"{side}x{side} grey levels, 0-255 or 0-1, white digit on black")))
    many = create_model("ArrayBatch", __config__=forbid, images=(list[image], Field(
        min_length=1, description=f"{side}x{side} arrays, answered in order")))
    return one, many


def component(name: str) -> dict:
    """A reference to one of :func:`request_components` in the OpenAPI schema."""
    return {"$ref": f"#/components/schemas/{name}"}


class Scores(BaseModel):
    probs: dict[str, float] = Field(description="softmax over the known classes")
    known_prob: float = Field(description="the sigmoid known-class head")
    distance: float = Field(description="the combined score's distance term (lower = more known); the model's "
                                        "v2 metadata says what it measures")
    score: float = Field(description="combined open-set score (higher = more known)")
    threshold: float = Field(description="known iff score >= threshold")


class ModelRef(BaseModel):
    name: str
    version: str


class Decision(BaseModel):
    label: str = Field(description='a known class, or the unknown label ("other")')
    known: bool
    scores: Scores


class PredictResponse(Decision):
    model: ModelRef


class BatchResponse(BaseModel):
    predictions: list[Decision]
    model: ModelRef


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong, in one line")


def error_responses(*codes: int) -> dict[int | str, dict]:
    """``responses=`` for a route: each status answered with the service's error body."""
    return {code: {"model": ErrorResponse} for code in codes}


# The v2 (Open Inference Protocol) responses.

# The decided label, served as one more v2 output beside the graph's own.
LABEL = "label"


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size")


class ModelParameters(BaseModel):
    classes: list[str]
    unknown_label: str
    threshold: float
    rule: str


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: ModelParameters


class ModelReady(BaseModel):
    name: str
    ready: bool


class ModelState(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, or UNAVAILABLE")


class ModelIndex(BaseModel):
    default: str | None = Field(description="the model v1 answers with when a request names none")
    models: list[ModelState]


class BinaryDataSize(BaseModel):
    binary_data_size: int = Field(ge=0, description="bytes of this tensor after the JSON header")


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | list[str] | None = Field(None, description="row-major values, unless sent as binary")
    parameters: BinaryDataSize | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]


def infer_request(side: int, input_name: str, outputs: list[str]) -> dict:
    """The v2 infer request for a model: one ``[N, 1, side, side]`` / ``[N, side, side]`` tensor of any numeric
    datatype, cast: a floating-point one (FP16, FP32, FP64) in [0, 1], an integer one (UINT8 ... INT64) in 0..255.
    JSON Schema cannot say that ``data`` holds N * side * side values (nor that a binary tensor's size matches)."""
    flags = {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}
    shape = {"oneOf": [
        {"type": "array", "minItems": 3, "maxItems": 3,
         "prefixItems": [{"type": "integer", "minimum": 1}, {"const": side}, {"const": side}]},
        {"type": "array", "minItems": 4, "maxItems": 4,
         "prefixItems": [{"type": "integer", "minimum": 1}, {"const": 1}, {"const": side}, {"const": side}]},
    ]}
    data = {"type": "array", "description": "row-major values (may be nested)",
            "items": {"anyOf": [{"type": "number"}, {"type": "array"}]}}
    return {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object", "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"const": input_name},
                    "datatype": {"enum": list(DATATYPES)},
                    "shape": shape,
                    "data": data,
                    "parameters": {"type": "object",
                                   "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                }}},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"enum": [*outputs, LABEL]}, "parameters": flags}}},
        },
    }


def request_components(manifest: ModelManifest | None) -> dict[str, dict]:
    """Every request body's schema for the served model (``None``: none loaded yet, the exporter's defaults), by the
    names :func:`component` refers to."""
    if manifest is None:
        side, input_name, outputs = MNIST_SIDE, INPUT, list(OUTPUTS)
    else:
        side, input_name, outputs = manifest.input.side, manifest.input.name, manifest.output_names
    one, many = array_models(side)
    return {"ArrayImage": one.model_json_schema(), "ArrayBatch": many.model_json_schema(),
            "InferRequest": infer_request(side, input_name, outputs)}
