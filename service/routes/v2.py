"""The Open Inference Protocol v2 (KServe / Triton / MLServer) endpoints, with Triton's binary tensor extension.

Thin: the bodies are decoded and encoded by :mod:`service.codec`, documented by :mod:`service.schemas`; the
model's tensors, classes and decision come from its manifest.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import openset
from service.codec import (
    HEADER_LENGTH,
    decode_body,
    encode_response,
    has_booleans,
    parse_request,
    read_input,
    requested_outputs,
)
from service.direct import direct
from service.errors import ServiceError
from service.guards import served_model
from service.runtime import ModelRuntime
from service.schemas import (
    LABEL,
    InferResponse,
    ModelIndex,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    component,
    error_responses,
)


def served(request: Request, name: str, version: str | None = None) -> ModelRuntime:
    """The served model of that name (and of that version), else 404. Called by each handler itself, as v1's are:
    a FastAPI dependency costs more than the check."""
    runtime = served_model(request, name)
    if version is not None and version != runtime.version:
        raise ServiceError(f"model {runtime.name!r} has no version {version!r} (serving {runtime.version!r})", 404)
    return runtime


def tensor_metadata(runtime: ModelRuntime) -> dict[str, list[dict]]:
    """The model's tensors as its manifest declares them, and the decided label."""
    manifest = runtime.manifest
    spec = lambda t: {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}  # noqa: E731
    return {"inputs": [spec(manifest.input)],
            "outputs": [*map(spec, manifest.outputs), {"name": LABEL, "datatype": "BYTES", "shape": [-1]}]}


# 401: the optional API key; 404: another model or version; 503: no model loaded yet. The service's own
# error body also for 422 (FastAPI would document its validation error shape, which is never sent).
models = APIRouter(prefix="/v2/models", tags=["v2"], responses=error_responses(401, 404, 422, 503))
health = APIRouter(prefix="/v2", tags=["v2"])


async def _infer(request: Request, runtime: ModelRuntime) -> Response:
    settings, manifest, admission = request.app.state.settings, runtime.manifest, request.app.state.admission
    admission.check()  # a full queue refuses before the body is read
    body = decode_body(await request.body(), request.headers.get("content-encoding", "").lower(),
                       settings.max_body_bytes)
    payload, binary = parse_request(body, request.headers.get(HEADER_LENGTH))
    wanted = requested_outputs(payload, [*manifest.output_names, LABEL])  # malformed is a 400 before any 413
    images = read_input(payload, binary, settings.max_batch, manifest.input, has_booleans(body))
    with admission.admitted(len(images)):
        values: dict[str, Any] = dict(await runtime.outputs(images))
    values[LABEL] = runtime.labels(values["probs"], values[manifest.decision.output])
    request.app.state.metrics.observe_predictions(runtime.name, values[LABEL])
    return encode_response({"model_name": runtime.name, "model_version": runtime.version}, payload, values, wanted)


_BINARY = {"type": "string", "format": "binary",
           "description": f"the JSON request ({HEADER_LENGTH} bytes), then the binary tensors"}
INFER_DOC = {
    "parameters": [{"name": HEADER_LENGTH, "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "binary tensor extension: the length of the JSON part of the body"}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": component("InferRequest")},
                                                  "application/octet-stream": {"schema": _BINARY}}},
}
INFER_RESPONSES = {
    200: {"description": "the outputs; binary ones after the JSON header (see its length header)",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "headers": {HEADER_LENGTH: {"schema": {"type": "integer"},
                                      "description": "with binary outputs: the length of the JSON header"}}},
    **error_responses(400, 408, 413, 415),
}


# Inference first: routes are matched in the order they are declared, and these are the busy ones.
@models.post("/{name}/infer", summary="Inference (JSON or binary tensors)", openapi_extra=INFER_DOC,
             response_class=JSONResponse, response_model=InferResponse, responses=INFER_RESPONSES)
@direct
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, served(request, name))


@models.post("/{name}/versions/{version}/infer", summary="Inference (one version)", openapi_extra=INFER_DOC,
             response_class=JSONResponse, response_model=InferResponse, responses=INFER_RESPONSES)
@direct
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, served(request, name, version))


def _model_metadata(runtime: ModelRuntime) -> dict:
    return {"name": runtime.name, "versions": [runtime.version], "platform": "onnxruntime_onnx",
            **tensor_metadata(runtime),
            "parameters": {"classes": list(runtime.manifest.classes), "unknown_label": runtime.manifest.unknown_label,
                           "threshold": runtime.manifest.threshold, "rule": runtime.manifest.decision.rule}}


@models.get("", summary="The served models (default first)", response_model=ModelIndex)
async def model_index(request: Request) -> dict:
    repository = request.app.state.repository
    names = sorted(repository.models, key=lambda name: name != repository.default_name)
    return {"default": repository.default_name,
            "models": [{"name": name, "version": repository.models[name].version,
                        "state": "READY" if repository.models[name].ready else "UNAVAILABLE"} for name in names]}


@models.get("/{name}", summary="Model metadata", response_model=ModelMetadata)
async def model_metadata(request: Request, name: str) -> dict:
    return _model_metadata(served(request, name))


@models.get("/{name}/versions/{version}", summary="Model metadata (one version)", response_model=ModelMetadata)
async def model_version_metadata(request: Request, name: str, version: str) -> dict:
    return _model_metadata(served(request, name, version))


@models.get("/{name}/ready", summary="Model readiness", response_model=ModelReady)
async def model_ready(request: Request, name: str) -> dict:
    runtime = served(request, name)
    return {"name": runtime.name, "ready": runtime.ready}


@models.get("/{name}/versions/{version}/ready", summary="Model readiness (one version)", response_model=ModelReady)
async def model_version_ready(request: Request, name: str, version: str) -> dict:
    runtime = served(request, name, version)
    return {"name": runtime.name, "ready": runtime.ready}


@health.get("/health/live", summary="Liveness", response_model=ServerLive)
async def live() -> dict:
    return {"live": True}


@health.get("/health/ready", summary="Readiness: the model is loaded", response_model=ServerReady,
            responses=error_responses(503))
async def ready(request: Request) -> dict:
    if not request.app.state.repository.ready:
        raise ServiceError("model not loaded", 503)
    return {"ready": True}


@health.get("", summary="Server metadata", response_model=ServerMetadata)
async def server_metadata() -> dict:
    return {"name": "openset", "version": openset.__version__, "extensions": ["binary_tensor_data"]}
