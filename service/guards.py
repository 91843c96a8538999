"""Request guards: the optional API key (a dependency) and readiness; the body limit is in ``service.gateway``."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import ServiceError
from service.runtime import ModelRuntime


def api_key_dependency(expected: str):
    """A dependency that checks ``X-API-Key`` (or ``Authorization: Bearer``) in constant time."""
    expected_bytes = expected.encode()

    async def require_api_key(request: Request) -> None:
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token if scheme.lower() == "bearer" else None
        if given is None:
            raise ServiceError("missing API key (send X-API-Key)", 401, {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), expected_bytes):
            raise ServiceError("wrong API key", 401, {"WWW-Authenticate": "Bearer"})

    return require_api_key


def ready_runtime(request: Request) -> ModelRuntime:
    """The model this request was pinned to (see ``service.lifecycle``), or 503 while there is none.
    Called directly on the hot path: a FastAPI dependency costs more than the check."""
    runtime: ModelRuntime = request.state.runtime
    if not runtime.ready:
        raise ServiceError("model not loaded", 503)
    return runtime
