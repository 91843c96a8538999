"""The busy routes, called by the gateway without FastAPI's per-request machinery.

FastAPI declares every route, documents it (OpenAPI) and answers all the others. For a route whose endpoint is
marked :func:`direct` (it takes the request and its string path parameters, and returns a Response), what FastAPI
adds on each request — body sniffing, dependency solving, its wrappers — cost about 0.2 ms on the development
machine, a fifth of a request (docs/performance.md). :class:`DirectRoutes` matches those routes first and calls
the same endpoint, after the same guards that FastAPI would run (the routers' dependencies: the API key), and
answers errors through the same mapping (:func:`service.errors.error_for`). A request it does not match (another
method, a trailing slash, a path behind a root path) goes on to FastAPI, which answers it as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.routing import Match, compile_path

from service.errors import error_for

Guard = Callable  # async (request) -> None, raising to refuse: a router's dependency (the API key check)


def direct(endpoint: Callable) -> Callable:
    """Mark an endpoint for the gateway's direct call (below the route decorator)."""
    endpoint.direct = True
    return endpoint


@dataclass(frozen=True)
class DirectRoute:
    route: APIRoute  # FastAPI's own route: its path, methods, compiled pattern and endpoint
    guards: tuple[Callable, ...]  # async (request) -> None, raising to refuse


class DirectRoutes:
    def __init__(self, routers: Sequence[tuple[APIRouter, Sequence[Guard]]]) -> None:
        """``routers``: each router with the guards it is included with (``app.include_router`` gets them as
        dependencies); their marked routes are taken, in order."""
        self.routes = [
            DirectRoute(_checked(route), tuple(_guard(g) for g in guards))
            for router, guards in routers
            for route in router.routes
            if isinstance(route, APIRoute) and getattr(route.endpoint, "direct", False)
        ]

    def match(self, scope) -> tuple[DirectRoute, dict[str, str]] | None:
        """The route that matches ``scope`` fully (path and method), by Starlette's own ``Route.matches``."""
        for entry in self.routes:
            found, child = entry.route.matches(scope)
            if found is Match.FULL:
                return entry, child["path_params"]
        return None

    async def __call__(self, entry: DirectRoute, params: dict[str, str], scope, receive, send) -> None:
        scope["route"], scope["path_params"] = entry.route, params
        request = Request(scope, receive)
        try:
            for guard in entry.guards:
                await guard(request)
            response = await entry.route.endpoint(request, **params)
        except Exception as err:  # (as FastAPI's exception handlers would answer it)
            response = error_for(err, request)
        try:
            await response(scope, receive, send)
        finally:
            await request.close()  # an uploaded form's spooled files


def _checked(route: APIRoute) -> APIRoute:
    """A marked route whose endpoint takes the request and its path parameters, nothing FastAPI would solve, and
    that has no dependency of its own (its router's guards are the only ones)."""
    parameters = list(compile_path(route.path)[2])
    if list(inspect.signature(route.endpoint).parameters) != ["request", *parameters] or route.dependencies:
        raise TypeError(f"a direct endpoint takes (request, *path parameters) only: {route.path}")
    return route


def _guard(call: Guard) -> Guard:
    """A guard must take the request alone (the API key check does)."""
    if list(inspect.signature(call).parameters) != ["request"]:
        raise TypeError(f"a direct route's guard must take (request) only: {call!r}")
    return call
