"""The one ASGI layer in front of the routes: every HTTP request passes it once.

Per request it pins the served models (``service.lifecycle``: a hot reload never changes the model under a request
that is being answered) and counts the request in the server's requests in flight (``service.admission``: the
batchers' signal);
refuses a body over the limit (413, at once from Content-Length, else while a chunked body streams); calls the
busy routes itself (``service.direct``); and times, counts and logs the request under its id. Every response
carries ``X-Request-ID`` and ``X-Model-Version`` (the model that answered it, else the default model). One layer,
not a stack of three: each layer of a middleware stack costs a pass of its own on every request
(docs/performance.md). A slow body's deadline (408) is the server
protocol's (``service.protocol``), a timer per read of the socket rather than one per ``receive``: a timeout
around each ``receive`` cost 10–13 µs of a 0.2 ms request (docs/performance.md).
"""

from __future__ import annotations

import logging
import os
import time

from service.direct import DirectRoutes
from service.errors import ServiceError, error_response
from service.observability import Metrics, access_log
from service.protocol import ANSWERED

# The rest of an unread body would be parsed as the next request: these answers end the connection.
CLOSE = {"Connection": "close"}


MODEL = "model"  # the scope state's key of the model that answers a request (service.guards.served_model)


def model_version(runtime) -> str:
    return f"{runtime.name}/{runtime.version}" if runtime is not None and runtime.ready else "none"


class Gateway:
    def __init__(self, app, metrics: Metrics, max_bytes: int, direct: DirectRoutes | None = None) -> None:
        self.app = app
        self.direct = direct
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or os.urandom(16).hex()
        app_state = scope["app"].state
        repository, admission = app_state.repository, app_state.admission
        state = scope.setdefault("state", {})
        state["repository"] = repository
        status = 500

        async def send_with_headers(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                answered_by = state.get(MODEL) or repository.default
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode("latin-1")),
                                      (b"x-model-version", model_version(answered_by).encode("latin-1", "replace"))]
            await send(message)

        admission.requests += 1
        try:
            length = headers.get(b"content-length")
            if length is not None and not length.isdigit():
                await error_response("malformed Content-Length header", 400, CLOSE)(scope, receive, send_with_headers)
            elif length is not None and int(length) > self.max_bytes:
                await error_response(f"request body exceeds {self.max_bytes} bytes", 413, CLOSE)(
                    scope, receive, send_with_headers)
            else:
                if length is None:  # (a body with a Content-Length is held to it by the HTTP parser)
                    receive = self._limited(receive)
                if self.direct is not None and (found := self.direct.match(scope)):
                    await self.direct(*found, scope, receive, send_with_headers)
                else:
                    await self.app(scope, receive, send_with_headers)
        finally:
            admission.requests -= 1
            status = scope.get(ANSWERED, status)
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            if access_log.isEnabledFor(logging.INFO):  # the fields as the record's args: encoded once, by orjson
                access_log.info("access", {
                    "ts": time.time(), "request_id": request_id, "method": scope["method"], "path": scope["path"],
                    "route": route, "status": status, "ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ["-"])[0],
                })

    def _limited(self, receive):
        """``receive`` with the body limit."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ServiceError(f"request body exceeds {self.max_bytes} bytes", 413, CLOSE)
            return message

        return limited
