"""Administration: hot reload of the served models. Mounted only when ``OPENSET_ADMIN_KEY`` is set."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from service.gateway import model_version
from service.lifecycle import reload_models
from service.schemas import ErrorResponse, error_responses


class ReloadedModel(BaseModel):
    model: str  # name/version now served
    sha256: str


class ReloadResult(BaseModel):
    models: list[ReloadedModel]


def _result(repository) -> ReloadResult:
    return ReloadResult(models=[ReloadedModel(model=model_version(r), sha256=r.manifest.onnx_sha256)
                                for r in repository.models.values()])


router = APIRouter(prefix="/admin", tags=["admin"])
REFUSED = {**error_responses(401), 409: {"model": ErrorResponse, "description": "a replacement refused: its old model "
                                                                            "is kept"}}


@router.post("/reload", summary="Load every model of the repository again (new ones too); a broken replacement is "
             "refused (409)", response_model=ReloadResult, responses=REFUSED)
async def reload(request: Request) -> ReloadResult:
    return _result(await reload_models(request.app))


@router.post("/models/{name}/reload", summary="Load one model again; refused (409) if the new one is broken",
             response_model=ReloadResult, responses={**REFUSED, **error_responses(404, 422)})
async def reload_one(request: Request, name: str) -> ReloadResult:
    return _result(await reload_models(request.app, name))
