"""The one place errors become HTTP answers: always an OperationOutcome, never internals."""

from __future__ import annotations

import logging
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from fhir_adapter.api.fhir_http import FhirResponse
from fhir_adapter.errors import (
    AdapterError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from fhir_adapter.fhir.outcome import Issue, make_outcome

log = logging.getLogger(__name__)

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
    code, text = _HTTP_ISSUES.get(
        exc.status_code, ("processing", "The request cannot be processed")
    )
    error: AdapterError = (
        NotFoundError(text)
        if exc.status_code == 404
        else MethodNotAllowedError(text)
        if exc.status_code == 405
        else InvalidRequestError(text)
    )
    error.issues = [Issue(code, text)]
    return FhirResponse(error.operation_outcome(), exc.status_code, dict(exc.headers or {}) or None)


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
