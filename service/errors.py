"""Every error the service answers, mapped to an HTTP status in one place. Bodies are ``{"error": "..."}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from openset.config import problems

log = logging.getLogger("openset.service")


class ServiceError(ValueError):
    """The one error the service answers with: a message and its HTTP status (400 bad input, 401 auth, 404
    unknown model, 413 too large, 415 not an image, 422 invalid, 503 not ready, …)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers

    def __reduce__(self):  # whole across a process pool (service.admission)
        return type(self), (str(self), self.status, self.headers)


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def validation_message(errors: list[dict], prefix: str = "invalid request") -> str:
    """pydantic's error list as one line, after ``prefix``."""
    return f"{prefix}: {problems(errors)}"


def error_for(err: Exception, request: Request) -> JSONResponse:
    """The answer to an error raised while answering ``request``: the one mapping from errors to statuses, used
    by FastAPI's exception handlers and by the gateway's direct routes (``service.direct``) alike."""
    if isinstance(err, ServiceError):
        return error_response(str(err), err.status, err.headers)
    if isinstance(err, StarletteHTTPException):
        return error_response(str(err.detail), err.status_code, err.headers)
    if isinstance(err, RequestValidationError):
        return error_response(validation_message(err.errors()), 422)
    if isinstance(err, ClientDisconnect):  # gone before its body was read: nobody to answer (nginx's 499)
        return error_response("client closed the request", 499)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err)
    return error_response("internal error", 500)


def install_error_handlers(app: FastAPI) -> None:
    # (a kind of its own, not under Exception: Starlette re-raises what its catch-all handler answered)
    for kind in (ServiceError, StarletteHTTPException, RequestValidationError, ClientDisconnect, Exception):
        app.add_exception_handler(kind, _handler)


async def _handler(request: Request, err: Exception) -> JSONResponse:
    return error_for(err, request)
