"""Request guards: the optional API key (a dependency) and the model a request names (404, 503); the body limit is
in ``service.gateway``."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.errors import ServiceError
from service.gateway import MODEL
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


def served_model(request: Request, name: str | None = None) -> ModelRuntime:
    """The model of that name (None: the default) in the snapshot this request was pinned to (see
    ``service.lifecycle``): 404 for a model not served, 503 while none is loaded. It answers the request (its
    ``X-Model-Version``). Called directly on the hot path: a FastAPI dependency costs more than the check."""
    runtime = request.state.repository.get(name)
    request.scope["state"][MODEL] = runtime
    return runtime
