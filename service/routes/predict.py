"""``/v1/predict`` and ``/v1/predict/batch``: real images in, a digit or "other" out."""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from openset.manifest import Layout
from service.codec import JSON, has_booleans, numbers, pixels
from service.direct import direct
from service.errors import ServiceError, validation_message
from service.guards import served_model
from service.preprocess import MEDIA_TYPES, decode, from_array, mnist_like
from service.runtime import ModelRuntime, Prediction
from service.schemas import BatchResponse, PredictResponse, array_models, component, error_responses

router = APIRouter(prefix="/v1", tags=["predict"])

# 408/413: the body-limit guard; 401: the optional API key; 404: a model not served; 503: no model loaded yet, or
# the server overloaded (service.admission).
ERRORS = error_responses(400, 401, 404, 408, 413, 415, 422, 503)


def _request_body(many: bool) -> dict:
    field = "files" if many else "file"
    binary = {"type": "string", "format": "binary"}
    multipart = {"type": "object", "required": [field],
                 "properties": {field: {"type": "array", "items": binary, "minItems": 1} if many else binary}}
    content = {"multipart/form-data": {"schema": multipart},
               "application/json": {"schema": component("ArrayBatch" if many else "ArrayImage")}}
    if not many:
        content.update({media: {"schema": binary} for media in sorted(MEDIA_TYPES)})
    model = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "the served model to ask (GET /v2/models lists them); default: the server's default model"}
    return {"requestBody": {"required": True, "content": content}, "parameters": [model]}


def laid_out(blobs: list[bytes], max_pixels: int, layout: Layout) -> np.ndarray:
    """Pictures decoded and laid out in the model's input layout, under one pixel budget for the whole request:
    float32 ``[N, 1, side, side]``."""
    images, budget = [], max_pixels
    for blob in blobs:
        image = decode(blob, budget)
        budget -= image.width * image.height
        images.append(mnist_like(image, layout))
    return np.stack(images)[:, None]


async def _uploaded_blobs(request: Request, many: bool, max_batch: int) -> list[bytes]:
    try:
        form = await request.form(max_files=max_batch + 1, max_fields=max_batch + 1)
    except HTTPException as err:  # Starlette's own multipart limits and parse errors
        raise ServiceError(f"multipart body refused: {err.detail}", 413 if "Too many" in str(err.detail) else 400) \
            from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise ServiceError("the multipart body has no file part", 422)
    if not many and len(files) > 1:
        raise ServiceError("send one file here; /v1/predict/batch takes several", 422)
    if len(files) > max_batch:
        raise ServiceError(f"{len(files)} images exceed the batch limit of {max_batch}", 413)
    return [await f.read() for f in files]


def _arrays(body: bytes, many: bool, side: int) -> list[np.ndarray]:
    """The images of a JSON body: read at once when the body is plainly well formed, else as the schema says."""
    return plain_arrays(body, many, side) or schema_arrays(body, many, side)


def plain_arrays(body: bytes, many: bool, side: int) -> list[np.ndarray] | None:
    """The images of a body that is plainly well formed — its one key, numbers and nothing else: no other string,
    no ``true`` or ``false`` — read by numpy at once (a third of what the schema costs); None for any other body."""
    key = "images" if many else "image"
    if body.count(b'"') != 2 or has_booleans(body):
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(payload, dict) and list(payload) == [key]):
        return None
    array = numbers(payload[key] if many else [payload[key]], booleans=False)
    if array is None or array.ndim != 3 or not len(array) or array.shape[1:] != (side, side):
        return None
    try:
        return [pixels(image, "either") for image in array]
    except ServiceError:  # (the schema names the value)
        return None


def schema_arrays(body: bytes, many: bool, side: int) -> list[np.ndarray]:
    """The images of a JSON body as the strict schema reads it, or a 422 that says what is wrong."""
    # The schema has made every value a JSON number already (strict), so numpy may take the lists as they are.
    one, batch = array_models(side)
    try:
        if many:
            return [from_array(np.asarray(a), side) for a in batch.model_validate_json(body).images]
        return [from_array(np.asarray(one.model_validate_json(body).image), side)]
    except ValidationError as err:
        raise ServiceError(validation_message(err.errors(), "invalid JSON body"), 422) from None


async def read_inputs(request: Request, many: bool, side: int) -> np.ndarray | list[bytes]:
    """The request's image(s), whatever the accepted encoding: arrays as float32 ``[N, 1, side, side]``, pictures
    as their bytes (for :func:`laid_out`)."""
    settings = request.app.state.settings
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _uploaded_blobs(request, many, settings.max_batch)
    if not many and (media in MEDIA_TYPES or media == "application/octet-stream"):
        return [await request.body()]
    if media == "application/json":
        images = _arrays(await request.body(), many, side)
        if len(images) > settings.max_batch:
            raise ServiceError(f"{len(images)} images exceed the batch limit of {settings.max_batch}", 413)
        return np.stack(images)[:, None]
    accepted = "multipart/form-data or application/json" if many else \
        "multipart/form-data, application/json or image/png|jpeg|bmp|webp|gif"
    raise ServiceError(f"unsupported content type {media or '(none)'!r}; send {accepted}", 415)


async def _answer(request: Request, many: bool) -> tuple[ModelRuntime, list[Prediction]]:
    """The request's images, laid out for the model it names (``?model=``, else the default; its manifest's layout),
    answered in one model call; admitted first (``service.admission``), pictures laid out in the work pool."""
    runtime = served_model(request, request.query_params.get("model"))
    admission, layout = request.app.state.admission, runtime.manifest.input.layout
    admission.check()  # a full queue refuses before the body is read
    inputs = await read_inputs(request, many, layout.side)
    with admission.admitted(len(inputs)):
        if not isinstance(inputs, np.ndarray):
            inputs = await admission.run(laid_out, inputs, request.app.state.settings.max_image_pixels, layout,
                                          cpu_bound=True)
        predictions = runtime.decisions(await runtime.outputs(inputs))
    request.app.state.metrics.observe_predictions(runtime.name, [p.label for p in predictions])
    return runtime, predictions


def _decision(p: Prediction) -> dict:
    return {"label": p.label, "known": p.known,
            "scores": {"probs": p.probs, "known_prob": p.known_prob, "distance": p.distance,
                       "score": p.score, "threshold": p.threshold}}


def _model_ref(runtime: ModelRuntime) -> dict:
    return {"name": runtime.name, "version": runtime.version}


# The handlers build their JSON directly: the response models document it without a second validation pass.
@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             openapi_extra=_request_body(many=False),
             summary="Classify one image: a known digit or the unknown label")
@direct
async def predict(request: Request) -> JSONResponse:
    runtime, [prediction] = await _answer(request, many=False)
    return JSON({**_decision(prediction), "model": _model_ref(runtime)})


@router.post("/predict/batch", response_model=BatchResponse, responses=ERRORS,
             openapi_extra=_request_body(many=True),
             summary="Classify several images in one model call, answered in order")
@direct
async def predict_batch(request: Request) -> JSONResponse:
    runtime, predictions = await _answer(request, many=True)
    return JSON({"predictions": [_decision(p) for p in predictions], "model": _model_ref(runtime)})
