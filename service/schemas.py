"""Request and response bodies of the API, as the OpenAPI schema documents them.

The v1 bodies are validated with these models. The v2 protocol is parsed by hand (see routes/v2.py):
its models here only document the responses, and :data:`INFER_REQUEST` its request body.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from openset.contract import INPUT, OUTPUTS
from service.codec import DATATYPES

SIDE = 28
# The schema says what the service accepts: exactly 28x28 finite grey levels in [0, 255] (or [0, 1]).
# strict: JSON numbers only (lax mode would take "1" and true as pixels).
Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False, strict=True)]
Row = Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]
Image28 = Annotated[list[Row], Field(min_length=SIDE, max_length=SIDE)]


class ArrayImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: Image28 = Field(description="28x28 grey levels, 0-255 or 0-1, white digit on black")


class ArrayBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[Image28] = Field(min_length=1, description="28x28 arrays, answered in order")


class Scores(BaseModel):
    probs: dict[str, float] = Field(description="softmax over the known classes")
    known_prob: float = Field(description="the sigmoid known-class head")
    centroid_distance: float = Field(description="distance to the nearest class centroid (lower = more known)")
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


# The v2 infer request: one [N, 1, 28, 28] / [N, 28, 28] tensor of any numeric datatype, cast: a floating-point
# one (FP16, FP32, FP64) in [0, 1], an integer one (UINT8 ... INT64) in 0..255.
# JSON Schema cannot say that ``data`` holds N*784 values (nor that a binary tensor's size matches).
_FLAGS = {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}
_SHAPE = {"oneOf": [
    {"type": "array", "minItems": 3, "maxItems": 3,
     "prefixItems": [{"type": "integer", "minimum": 1}, {"const": SIDE}, {"const": SIDE}]},
    {"type": "array", "minItems": 4, "maxItems": 4,
     "prefixItems": [{"type": "integer", "minimum": 1}, {"const": 1}, {"const": SIDE}, {"const": SIDE}]},
]}
_DATA = {"type": "array", "description": "row-major values (may be nested)",
         "items": {"anyOf": [{"type": "number"}, {"type": "array"}]}}
INFER_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"const": INPUT},
                "datatype": {"enum": list(DATATYPES)},
                "shape": _SHAPE,
                "data": _DATA,
                "parameters": {"type": "object",
                               "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            }}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"enum": [*OUTPUTS, LABEL]}, "parameters": _FLAGS}}},
    },
}
