"""The one place errors become HTTP answers: always an OperationOutcome, never internals."""

from __future__ import annotations

import logging
import re
import traceback
import uuid

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from fhir_adapter.api.fhir_http import FhirResponse
from fhir_adapter.errors import (
    AdapterError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from fhir_adapter.fhir.outcome import Issue, make_outcome
from fhir_adapter.fhir.resources import SERVED_TYPES
from fhir_adapter.services.access_rules import SERVER_WRITTEN

log = logging.getLogger(__name__)

# Routes that write a resource, by endpoint name: refused for the types only the server writes.
_CLIENT_WRITES = frozenset({"create", "update"})
# Status -> (issue code, message) for errors Starlette raises before our code runs.
_HTTP_ISSUES: dict[int, tuple[str, str]] = {
    404: ("not-found", "No FHIR endpoint at this address"),
    405: ("not-supported", "This HTTP method is not supported at this address"),
}


async def _adapter_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdapterError)
    log.info(
        "%s %s refused: %d %s",
        request.method,
        request.url.path,
        exc.status_code,
        ",".join(i.code for i in exc.issues),
    )
    return FhirResponse(exc.operation_outcome(), exc.status_code, exc.headers() or None)


async def _starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status_code, headers = exc.status_code, dict(exc.headers or {})
    if status_code == 405:
        # Starlette names the methods of the first route that matched the path only (GET for
        # `Patient/1`, though PUT works there too); RFC 9110 wants every method the URL supports.
        table = getattr(request.app.state, "methods", None)
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        allowed = table.allowed(path) if isinstance(table, MethodTable) else None
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        elif allowed is not None:  # only `{resource_type}` routes know it, for a type not served
            status_code = 404
    code, text = _HTTP_ISSUES.get(status_code, ("processing", "The request cannot be processed"))
    error: AdapterError = (
        NotFoundError(text)
        if status_code == 404
        else MethodNotAllowedError(text)
        if status_code == 405
        else InvalidRequestError(text)
    )
    error.issues = [Issue(code, text)]
    return FhirResponse(error.operation_outcome(), status_code, headers or None)


class MethodTable:
    """Which methods each URL under our routers supports, for the `Allow` header of a 405.

    On the FHIR base a route for `{resource_type}` counts only for a type we serve, and a client
    write only for a type clients may write (the audit trail is the server's alone)."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str], str, bool]] = []

    def add(self, prefix: str, router: APIRouter, *, fhir: bool = False) -> None:
        for route in router.routes:
            if isinstance(route, APIRoute):
                regex, _, _ = compile_path(prefix + route.path)
                self._routes.append((regex, frozenset(route.methods or ()), route.name, fhir))

    def allowed(self, path: str) -> list[str] | None:
        """The methods for `path`, sorted; None when no route knows the path at all."""
        methods: set[str] = set()
        known = False
        for regex, route_methods, name, fhir in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            known = True
            resource_type = match.groupdict().get("resource_type") if fhir else None
            if resource_type is not None and (
                resource_type not in SERVED_TYPES
                or (resource_type in SERVER_WRITTEN and name in _CLIENT_WRITES)
            ):
                continue
            methods |= route_methods
        return sorted(methods) if known else None


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue("invalid", f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}") for e in exc.errors()
    ]
    return FhirResponse(make_outcome(issues), 400)


def unexpected_error_response(exc: BaseException) -> Response:
    """Log where it failed (type, file, line: no message, which may hold data) and say nothing more."""
    error_id = uuid.uuid4().hex[:12]
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    log.error(
        "unhandled %s at %s:%s (error id %s)",
        type(exc).__name__,
        frame.filename if frame else "?",
        frame.lineno if frame else "?",
        error_id,
    )
    outcome = make_outcome(
        [Issue("exception", f"Internal server error (error id {error_id})", severity="fatal")]
    )
    return FhirResponse(outcome, 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AdapterError, _adapter_error)
    app.add_exception_handler(StarletteHTTPException, _starlette_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
