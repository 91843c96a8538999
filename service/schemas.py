"""Request and response bodies of the v1 API (the v2 protocol is parsed by hand, see routes/v2.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

Image28 = list[list[float]]


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
    error: str
