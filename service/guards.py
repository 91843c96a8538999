"""Request guards: the body-size limit (ASGI middleware), the optional API key and readiness (dependencies)."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import Request

from service.errors import ServiceError, error_response
from service.runtime import ModelRuntime

# The rest of an unread body would be parsed as the next request: these answers end the connection.
CLOSE = {"Connection": "close"}


class BodyLimitMiddleware:
    """Answers 413 when a body exceeds ``max_bytes``: at once from Content-Length, else while streaming;
    and 408 when a chunk of the body takes longer than ``timeout`` seconds (slow clients)."""

    def __init__(self, app, max_bytes: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and not length.isdigit():
            await error_response("malformed Content-Length header", 400, CLOSE)(scope, receive, send)
            return
        if length is not None and int(length) > self.max_bytes:
            await error_response(f"request body exceeds {self.max_bytes} bytes", 413, CLOSE)(scope, receive, send)
            return
        seen = 0

        async def counted_receive():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise ServiceError(f"request body not received within {self.timeout:g} s", 408, CLOSE) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ServiceError(f"request body exceeds {self.max_bytes} bytes", 413, CLOSE)
            return message

        await self.app(scope, counted_receive, send)


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
