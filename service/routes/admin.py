"""Administration: hot reload of the model directory. Mounted only when ``OPENSET_ADMIN_KEY`` is set."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from service.gateway import model_version
from service.lifecycle import reload_model
from service.schemas import ErrorResponse


class ReloadResult(BaseModel):
    model: str  # name/version now served
    sha256: str


router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload", summary="Load the model directory again; refused (409) if the new model is broken",
             response_model=ReloadResult,
             responses={401: {"model": ErrorResponse}, 409: {"model": ErrorResponse, "description": "old model kept"}})
async def reload(request: Request) -> ReloadResult:
    runtime = await reload_model(request.app)
    return ReloadResult(model=model_version(runtime), sha256=runtime.manifest.onnx_sha256)
