"""Operations: ``/metrics`` (Prometheus), the demo page at ``/`` and the API docs (``/docs``, ``/redoc``).

The docs are FastAPI's Swagger UI and ReDoc pages with their scripts served from this package
(``static/docs``, FastAPI's recipe for self-hosted docs), so they work in a closed network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["ops"])
STATIC = Path(__file__).resolve().parents[1] / "static"
DEMO_PAGE = STATIC / "index.html"
ASSETS = "/static/docs"  # where main.py mounts STATIC / "docs"


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", summary="Demo page: draw or drop a digit", response_class=FileResponse, include_in_schema=False)
async def demo() -> FileResponse:
    return FileResponse(DEMO_PAGE, media_type="text/html")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    # validatorUrl None: Swagger UI would otherwise fetch a badge from validator.swagger.io.
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - API docs",
                               swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                               swagger_ui_parameters={"validatorUrl": None})


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - API reference",
                          redoc_js_url=f"{ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{ASSETS}/favicon-32x32.png", with_google_fonts=False)
