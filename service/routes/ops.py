"""Operations: ``/metrics`` (Prometheus) and the demo page at ``/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["ops"])
DEMO_PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", summary="Demo page: draw or drop a digit", response_class=FileResponse, include_in_schema=False)
async def demo() -> FileResponse:
    return FileResponse(DEMO_PAGE, media_type="text/html")
