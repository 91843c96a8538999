"""``/v1/predict`` and ``/v1/predict/batch``: real images in, a digit or "other" out."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.preprocess import MEDIA_TYPES, InputError, from_array, from_image_bytes
from service.runtime import ModelRuntime, Prediction
from service.schemas import ArrayBatch, ArrayImage, BatchResponse, Decision, ErrorResponse, PredictResponse

router = APIRouter(prefix="/v1", tags=["predict"])

IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 503)}


def _request_body(json_model: type, many: bool) -> dict:
    field = "files" if many else "file"
    multipart = {"type": "object", "properties": {field: {"type": "string", "format": "binary"}}, "required": [field]}
    if many:
        multipart["properties"][field] = {"type": "array", "items": {"type": "string", "format": "binary"}}
    content = {"multipart/form-data": {"schema": multipart},
               "application/json": {"schema": json_model.model_json_schema()}}
    if not many:
        content.update({media: IMAGE_BODY for media in ("image/png", "image/jpeg", "image/bmp", "image/webp",
                                                        "image/gif")})
    return {"requestBody": {"required": True, "content": content}}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_images(request: Request, many: bool) -> np.ndarray:
    """The request's image(s) as float32 ``[N, 1, 28, 28]``, whatever the accepted encoding."""
    settings = request.app.state.settings
    media = _media_type(request)
    if media == "multipart/form-data":
        form = await request.form(max_files=settings.max_batch, max_fields=settings.max_batch)
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise InputError("the multipart body has no file part", 422)
        if not many and len(files) > 1:
            raise InputError("send one file here; /v1/predict/batch takes several", 422)
        images = [from_image_bytes(await f.read(), settings.max_image_pixels) for f in files]
    elif media == "application/json":
        body = await request.body()
        try:
            if many:
                images = [from_array(a) for a in ArrayBatch.model_validate_json(body).images]
            else:
                images = [from_array(ArrayImage.model_validate_json(body).image)]
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"invalid JSON body: {where}: {first['msg']}" if where else
                             f"invalid JSON body: {first['msg']}", 422) from None
    elif not many and (media in MEDIA_TYPES or media == "application/octet-stream"):
        images = [from_image_bytes(await request.body(), settings.max_image_pixels)]
    else:
        accepted = "multipart/form-data or application/json" if many else \
            "multipart/form-data, application/json or image/png|jpeg|bmp|webp|gif"
        raise InputError(f"unsupported content type {media or '(none)'!r}; send {accepted}", 415)
    if len(images) > settings.max_batch:
        raise InputError(f"{len(images)} images exceed the batch limit of {settings.max_batch}", 413)
    return np.stack(images)[:, None, :, :]


def _decisions(runtime: ModelRuntime, request: Request, images: np.ndarray) -> list[Prediction]:
    predictions = runtime.predict(images)
    request.app.state.metrics.observe_predictions([p.label for p in predictions])
    return predictions


def _decision(p: Prediction) -> dict:
    return {"label": p.label, "known": p.known,
            "scores": {"probs": p.probs, "known_prob": p.known_prob, "centroid_distance": p.centroid_distance,
                       "score": p.score, "threshold": p.threshold}}


@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=_request_body(ArrayImage, many=False),
             summary="Classify one image: a known digit or the unknown label")
async def predict(request: Request) -> dict:
    runtime = request.app.state.runtime
    images = await read_images(request, many=False)
    [prediction] = _decisions(runtime, request, images)
    return {**_decision(prediction), "model": {"name": runtime.name, "version": runtime.version}}


@router.post("/predict/batch", response_model=BatchResponse, responses=ERRORS,
             openapi_extra=_request_body(ArrayBatch, many=True),
             summary="Classify several images in one model call, answered in order")
async def predict_batch(request: Request) -> dict:
    runtime = request.app.state.runtime
    images = await read_images(request, many=True)
    return {"predictions": [_decision(p) for p in _decisions(runtime, request, images)],
            "model": {"name": runtime.name, "version": runtime.version}}


__all__ = ["router", "Decision"]
