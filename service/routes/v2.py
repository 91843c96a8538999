"""The Open Inference Protocol v2 (KServe / Triton / MLServer), with Triton's binary tensor extension.

Bodies are parsed by hand: tritonclient sends JSON without a Content-Type, and binary requests
are a JSON header followed by raw tensors (``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

import openset
from openset.contract import INPUT, OUTPUTS
from service.codec import DATATYPES, NOT_PIXELS, from_binary, numbers, pixels
from service.errors import ServiceError
from service.guards import ready_runtime
from service.runtime import ModelRuntime, off_the_loop
from service.schemas import (
    INFER_REQUEST,
    LABEL,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    error_responses,
)

HEADER_LENGTH = "inference-header-content-length"


async def get_runtime(request: Request, name: str) -> ModelRuntime:
    runtime = ready_runtime(request)
    if name != runtime.name:
        raise ServiceError(f"unknown model {name!r}; this server serves {runtime.name!r}", 404)
    return runtime


def _check_version(runtime: ModelRuntime, version: str) -> None:
    if version != runtime.version:
        raise ServiceError(f"model {runtime.name!r} has no version {version!r} (serving {runtime.version!r})", 404)


def tensor_metadata(runtime: ModelRuntime) -> dict[str, list[dict]]:
    shapes = runtime.output_shapes()
    outputs = [{"name": name, "datatype": "FP32", "shape": shapes[name]} for name in OUTPUTS]
    return {
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [*outputs, {"name": LABEL, "datatype": "BYTES", "shape": [-1]}],
    }


health = APIRouter(prefix="/v2", tags=["v2"])
# 401: the optional API key; 404: another model or version; 503: no model loaded yet. The service's own
# error body also for 422 (FastAPI would document its validation error shape, which is never sent).
models = APIRouter(prefix="/v2/models", tags=["v2"], responses=error_responses(401, 404, 422, 503))


@health.get("/health/live", summary="Liveness", response_model=ServerLive)
async def live() -> dict:
    return {"live": True}


@health.get("/health/ready", summary="Readiness: the model is loaded", response_model=ServerReady,
            responses=error_responses(503))
async def ready(request: Request) -> dict:
    if not request.app.state.runtime.ready:
        raise ServiceError("model not loaded", 503)
    return {"ready": True}


@health.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "openset", "version": openset.__version__, "extensions": ["binary_tensor_data"]}


def _model_metadata(runtime: ModelRuntime) -> dict:
    return {"name": runtime.name, "versions": [runtime.version], "platform": "onnxruntime_onnx",
            **tensor_metadata(runtime),
            "parameters": {"classes": runtime.classes, "unknown_label": runtime.unknown_label,
                           "threshold": runtime.threshold, "rule": runtime.meta.get("rule", "")}}


@models.get("/{name}", summary="Model metadata", response_model=ModelMetadata)
async def model_metadata(runtime: ModelRuntime = Depends(get_runtime)) -> dict:
    return _model_metadata(runtime)


@models.get("/{name}/versions/{version}", summary="Model metadata (one version)", response_model=ModelMetadata)
async def model_version_metadata(version: str, runtime: ModelRuntime = Depends(get_runtime)) -> dict:
    _check_version(runtime, version)
    return _model_metadata(runtime)


@models.get("/{name}/ready", summary="Model readiness", response_model=ModelReady)
async def model_ready(runtime: ModelRuntime = Depends(get_runtime)) -> dict:
    return {"name": runtime.name, "ready": runtime.ready}


@models.get("/{name}/versions/{version}/ready", summary="Model readiness (one version)", response_model=ModelReady)
async def model_version_ready(version: str, runtime: ModelRuntime = Depends(get_runtime)) -> dict:
    _check_version(runtime, version)
    return {"name": runtime.name, "ready": runtime.ready}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServiceError(f"unsupported Content-Encoding {encoding!r}", 415)
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise ServiceError(f"corrupt {encoding} body: {err}", 400) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ServiceError(f"decompressed body exceeds {limit} bytes", 413)
    return out


def _parameters(obj: dict) -> dict:
    """An object's optional ``parameters``, which must be a JSON object."""
    value = obj.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServiceError("'parameters' must be an object", 400)
    return value


def _whole(value: Any) -> int | None:
    """A JSON integer as an int (JSON Schema counts ``2.0`` as one too); None for anything else."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(parameters: dict, key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ServiceError(f"parameter {key!r} must be true or false", 400)
    return value


def parse_request(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ServiceError(f"bad {HEADER_LENGTH} header {header_length!r}", 400)
        head, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        head, binary = body, b""
    try:
        payload = json.loads(head)
    except (ValueError, RecursionError):
        raise ServiceError("request body is not valid JSON", 400) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise ServiceError("request must be a JSON object with an 'inputs' list", 400)
    if "id" in payload and not isinstance(payload["id"], str):
        raise ServiceError("'id' must be a string", 400)
    _parameters(payload)
    return payload, binary


def read_input(payload: dict, binary: bytes, max_batch: int) -> np.ndarray:
    """The one input tensor as float32 ``[N, 1, 28, 28]`` in [0, 1].

    A malformed request is a 400; a well-formed tensor of the wrong shape, type or values a 422; a
    batch over the limit a 413, but only once the request is known to be well formed.
    """
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        raise ServiceError(f"expected exactly one input named {INPUT!r}", 400)
    tensor = inputs[0]
    datatype, given_shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # (a list or an object is not hashable)
        kind = "grey levels are numbers" if datatype in NOT_PIXELS else f"one of {', '.join(DATATYPES)}"
        raise ServiceError(f"input datatype must be {kind}, got {datatype!r}", 422)
    shape = [_whole(d) for d in given_shape] if isinstance(given_shape, list) else None
    if not (shape and None not in shape and len(shape) in (3, 4) and shape[-2:] == [28, 28]
            and (len(shape) == 3 or shape[1] == 1) and shape[0] >= 1):
        raise ServiceError(f"input shape must be [N, 1, 28, 28] or [N, 28, 28], got {given_shape!r}", 422)
    # The request's structure first (400), then its size (413), then whether the values fit the shape (422).
    given_size = _parameters(tensor).get("binary_data_size")
    size = _whole(given_size)
    if given_size is not None:
        if size is None or size < 0:
            raise ServiceError(f"binary_data_size must be a byte count, got {given_size!r}", 400)
        if "data" in tensor:
            raise ServiceError("send the input as 'data' or as binary data (binary_data_size), not both", 400)
    else:
        array = numbers(tensor.get("data"))
        if array is None:
            raise ServiceError("input 'data' must be a (nested) list of numbers", 400)
    if shape[0] > max_batch:
        raise ServiceError(f"batch of {shape[0]} exceeds the limit of {max_batch}", 413)
    count = math.prod(shape)
    if size is not None:
        if size != count * DATATYPES[datatype].itemsize or len(binary) != size:
            raise ServiceError(f"binary_data_size {size!r} does not match shape {shape} and the body", 400)
        array = from_binary(binary, datatype)
    else:
        array = array.reshape(-1)
        if array.size != count:
            raise ServiceError(f"input has {array.size} values, shape {shape} needs {count}", 422)
    scale = "unit" if DATATYPES[datatype].kind == "f" else "byte"
    return pixels(array, scale).reshape(shape[0], 1, 28, 28)


def requested_outputs(payload: dict, names: list[str]) -> list[tuple[str, bool]]:
    """(name, binary) for each requested output, once each; every output when none are named."""
    default_binary = _flag(_parameters(payload), "binary_data_output", False)
    wanted = payload.get("outputs")
    if wanted is None:
        return [(name, default_binary) for name in names]
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ServiceError("'outputs' must be a list of objects", 400)
    result: dict[str, bool] = {}
    for item in wanted:
        if item.get("name") not in names:
            raise ServiceError(f"unknown output {item.get('name')!r}; outputs are {names}", 400)
        result[item["name"]] = _flag(_parameters(item), "binary_data", default_binary)
    return list(result.items())


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def build_response(runtime: ModelRuntime, payload: dict, values: dict[str, Any], wanted) -> Response:
    outputs, blobs = [], []
    for name, binary in wanted:
        value = values[name]
        if name == LABEL:
            entry = {"name": name, "datatype": "BYTES", "shape": [len(value)]}
            raw = _bytes_tensor(value) if binary else None
            data = value
        else:
            entry = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
            raw = np.ascontiguousarray(value, dtype="<f4").tobytes() if binary else None
            data = value.reshape(-1).tolist()
        if binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = data
        outputs.append(entry)
    body = {"model_name": runtime.name, "model_version": runtime.version, "outputs": outputs}
    if "id" in payload:
        body["id"] = payload["id"]
    head = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})


async def _infer(request: Request, runtime: ModelRuntime) -> Response:
    settings = request.app.state.settings
    body = _decompress(await request.body(), request.headers.get("content-encoding", "").lower(),
                       settings.max_body_bytes)
    payload, binary = parse_request(body, request.headers.get(HEADER_LENGTH))
    wanted = requested_outputs(payload, [*OUTPUTS, LABEL])  # a malformed request is a 400 before any 413
    images = read_input(payload, binary, settings.max_batch)
    values: dict[str, Any] = await off_the_loop(runtime.run, images)
    values[LABEL] = runtime.labels(values["probs"], values["score"])
    request.app.state.metrics.observe_predictions(values[LABEL])
    return build_response(runtime, payload, values, wanted)


_BINARY = {"type": "string", "format": "binary",
           "description": f"the JSON request ({HEADER_LENGTH} bytes), then the binary tensors"}
INFER_DOC = {
    "parameters": [{"name": HEADER_LENGTH, "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "binary tensor extension: the length of the JSON part of the body"}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST},
                                                  "application/octet-stream": {"schema": _BINARY}}},
}
INFER_RESPONSES = {
    200: {"description": "the outputs; binary ones after the JSON header (see its length header)",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "headers": {HEADER_LENGTH: {"schema": {"type": "integer"},
                                      "description": "with binary outputs: the length of the JSON header"}}},
    **error_responses(400, 408, 413, 415),
}


@models.post("/{name}/infer", summary="Inference (JSON or binary tensors)", openapi_extra=INFER_DOC,
             response_class=JSONResponse, response_model=InferResponse, responses=INFER_RESPONSES)
async def infer(request: Request, runtime: ModelRuntime = Depends(get_runtime)) -> Response:
    return await _infer(request, runtime)


@models.post("/{name}/versions/{version}/infer", summary="Inference (one version)", openapi_extra=INFER_DOC,
             response_class=JSONResponse, response_model=InferResponse, responses=INFER_RESPONSES)
async def infer_version(request: Request, version: str, runtime: ModelRuntime = Depends(get_runtime)) -> Response:
    _check_version(runtime, version)
    return await _infer(request, runtime)
