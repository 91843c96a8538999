"""Builds the FastAPI app: settings, the served models (loaded in the lifespan), routes, errors, metrics.

Run: ``openset-serve`` (uvicorn with openset's protocol, ``service.protocol``). A model that is missing,
corrupt or breaks the contract stops the server at start-up with a one-line reason, as does a repository with no
model, two models of one name or without the default model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

import openset
from openset.artifacts import ArtifactError
from service.admission import Admission
from service.direct import DirectRoutes
from service.errors import install_error_handlers
from service.gateway import Gateway, model_version
from service.guards import api_key_dependency
from service.lifecycle import install_sighup, load_repository, publish
from service.observability import MULTIPROCESS_DIR, Metrics, configure_logging
from service.repository import ModelRepository
from service.routes import admin, ops, predict, v2
from service.schemas import request_components
from service.settings import Settings, get_settings

log = logging.getLogger("openset.service")


def openapi(app: FastAPI) -> dict:
    """The OpenAPI schema, its request bodies those of the default model (made again after a reload)."""
    if app.openapi_schema is None:
        default = app.state.repository.default
        ready = default is not None and default.ready
        schema = FastAPI.openapi(app)  # FastAPI's own, which it keeps in app.openapi_schema
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            request_components(default.manifest if ready else None))
        if not ready:
            app.openapi_schema = None
        return schema
    return app.openapi_schema


class Service(FastAPI):
    """FastAPI with the gateway in front of all of it. An HTTP request meets the gateway first; one that the
    gateway does not answer itself (``service.direct``) goes on through FastAPI's own layers (its telemetry check,
    error middleware and routing), which a direct route no longer pays for (docs/performance.md). The lifespan
    goes to FastAPI as before."""

    entry = None  # the gateway, or CORS and then the gateway (set by create_app)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.entry is not None:
            scope["app"] = self
            await self.entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, direct: bool = True) -> FastAPI:
    """The app; ``direct=False`` (for the tests that compare both paths) sends every route through FastAPI."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        repository = load_repository(settings, app.state.admission)
        app.state.admission.start((predict.__name__,))  # (pictures are laid out by predict.laid_out)
        publish(app, repository)
        for runtime in repository.models.values():
            log.info(json.dumps({"event": "model_loaded", "model": model_version(runtime),
                                 "default": runtime is repository.default, "threshold": runtime.manifest.threshold,
                                 "model_dir": str(runtime.model_dir)}))
        install_sighup(app)
        yield
        app.state.admission.close()

    # /docs and /redoc come from routes.ops with their own scripts (no CDN).
    app = Service(title="openset", version=openset.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A digit classifier that answers 0-4, or 'other' for anything else.")
    app.mount(ops.ASSETS, StaticFiles(directory=ops.STATIC / "docs"), name="docs-assets")
    app.openapi = lambda: openapi(app)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.repository = ModelRepository({}, None)  # empty (not ready) until the lifespan loads the models
    app.state.admission = Admission(settings.max_queued_images, settings.max_queue_delay_ms / 1000,
                                    settings.work_threads, settings.picture_processes, settings.retry_after,
                                    metrics.observe_shed)
    app.state.reload_lock = asyncio.Lock()
    # Each router with its guards (the API key), included with them as dependencies; the gateway's direct routes
    # call the same guards.
    secured = [api_key_dependency(settings.api_key.get_secret_value())] if settings.api_key else []
    routers = [(predict.router, secured), (v2.models, secured), (v2.health, []), (ops.router, [])]
    for router, guards in routers:
        app.include_router(router, dependencies=[Depends(guard) for guard in guards])
    if settings.admin_key:
        admin_key = settings.admin_key.get_secret_value()
        app.include_router(admin.router, dependencies=[Depends(api_key_dependency(admin_key))])
    install_error_handlers(app)
    # One layer in front of FastAPI (service.gateway); CORS, when open, before it, so that its headers reach
    # even the gateway's own 413s.
    entry = Gateway(partial(FastAPI.__call__, app), metrics=metrics, max_bytes=settings.max_body_bytes,
                    direct=DirectRoutes(routers) if direct else None)
    if settings.cors_origins:
        entry = CORSMiddleware(entry, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                               allow_headers=["*"])
    app.entry = entry
    return app


def serve() -> None:
    """Console script ``openset-serve``: validate the model first, then run uvicorn."""
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        load_repository(settings)
    except ArtifactError as err:
        print(f"openset-serve: cannot start: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    # Several workers share their metrics through files (prometheus_client's multiprocess mode), in a fresh
    # directory unless PROMETHEUS_MULTIPROC_DIR names one; the workers, started after this, inherit it.
    own_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROCESS_DIR):
        own_dir = os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="openset-metrics-")
    try:
        # SIGTERM: uvicorn stops accepting, lets in-flight requests finish (up to graceful_timeout), then exits.
        uvicorn.run("service.main:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level=settings.log_level, access_log=False,
                    timeout_keep_alive=30, timeout_graceful_shutdown=settings.graceful_timeout,
                    limit_concurrency=settings.max_connections, http="service.protocol:DeadlineHttpToolsProtocol")
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
