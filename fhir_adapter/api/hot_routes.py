"""The read by id and the type search, matched first and answered without FastAPI's router and
dependency solver (issue #18: the two were about a fifth of a read's CPU).

The route claims only `GET /fhir/{served type}` and `GET /fhir/{served type}/{valid id}`, which
reach `resources.search` and `resources.read` through FastAPI too; every other URL, and these
with another method, falls through to FastAPI's routes as before (`tests/e2e/test_route_pin.py`
pins each URL's handler). It calls the same endpoint code after the same checks, in the same
order as the router's dependencies (negotiation, then the token), and puts FastAPI's own route
in the scope, so the 405 table, the metrics' route label and the OpenAPI document stay as they
were. Errors propagate to the app's exception handlers like any route's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from fhir_adapter.access.guard import Guard
from fhir_adapter.api.fhir_http import check_negotiation
from fhir_adapter.api.security import authenticate, get_guard
from fhir_adapter.bootstrap import Container
from fhir_adapter.fhir.references import ID_PATTERN
from fhir_adapter.fhir.resources import SERVED_TYPES

HotEndpoint = Callable[..., Awaitable[Response]]


class HotReads(BaseRoute):
    """One route for the two hottest GETs; `read` and `search` are FastAPI's APIRoutes for them."""

    def __init__(self, *, read: Any, search: Any, prefix: str = "/fhir/") -> None:
        for route in (read, search):  # they would be skipped here
            if route.dependencies:
                raise ValueError(f"{route.path} has dependencies HotReads does not run")
        self.read = read
        self.search = search
        self.prefix = prefix

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET":
            return Match.NONE, {}
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith(self.prefix):
            return Match.NONE, {}
        resource_type, _, id = path[len(self.prefix) :].partition("/")
        if resource_type not in SERVED_TYPES:
            return Match.NONE, {}
        if not id and not _:
            route, params = self.search, {"resource_type": resource_type}
        elif "/" not in id and ID_PATTERN.match(id):
            route, params = self.read, {"resource_type": resource_type, "id": id}
        else:
            return Match.NONE, {}
        return Match.FULL, {"endpoint": route.endpoint, "route": route, "path_params": params}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await check_negotiation(request)
        container: Container = scope["app"].state.container
        access = await authenticate(request, container)
        guard: Guard = await get_guard(access, container)
        endpoint: HotEndpoint = scope["endpoint"]
        response = await endpoint(
            request=request, container=container, guard=guard, **scope["path_params"]
        )
        await response(scope, receive, send)
