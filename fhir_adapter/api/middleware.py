"""ASGI middleware: the request body limit, a PHI-free access log with request metrics."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_adapter import logs, telemetry
from fhir_adapter.access.audit import AuditRecord
from fhir_adapter.errors import (
    AdapterError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    TemporarilyUnavailableError,
)
from fhir_adapter.fhir.capability import OPERATIONS
from fhir_adapter.fhir.references import ID_PATTERN
from fhir_adapter.fhir.resources import is_known_type

access_log = logging.getLogger("fhir_adapter.access")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodySizeLimit:
    """Bounds what a request may make the server hold (issue #16): headers over
    `max_header_bytes` are a 431, a declared body over `max_bytes` a 413 before anything is read.
    The body itself is never buffered here: the app reads it after the token is checked, through
    a `receive` that counts bytes (413 past the limit), gives up on a stalled sender after
    `timeout_seconds` (408), and lets at most `max_concurrent` bodies be received at once (503)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_header_bytes: int = 16 * 1024,
        timeout_seconds: float = 30.0,
        max_concurrent: int = 64,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes
        self.timeout = timeout_seconds
        self.max_concurrent = max_concurrent
        self.receiving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header_bytes:
            await self._refuse(
                send,
                HeadersTooLargeError(
                    f"The request headers are larger than the limit of {self.max_header_bytes} bytes"
                ),
            )
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, self._too_large())
            return
        state = {"size": 0, "slot": False, "done": False}

        async def limited() -> Message:
            if state["done"]:
                return await receive()  # the body is in; what follows is a disconnect
            if not state["slot"]:
                if self.receiving >= self.max_concurrent:
                    raise TemporarilyUnavailableError(
                        "The server is receiving too many request bodies at once; retry shortly"
                    )
                self.receiving += 1
                state["slot"] = True
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise RequestTimeoutError(
                    f"The request body did not arrive within {self.timeout:g} seconds"
                ) from None
            if message["type"] == "http.request":
                state["size"] += len(message.get("body", b""))
                if state["size"] > self.max_bytes:
                    raise self._too_large()
                state["done"] = not message.get("more_body", False)
            if state["done"] or message["type"] == "http.disconnect":
                release()
            return message

        def release() -> None:
            if state["slot"]:
                state["slot"] = False
                self.receiving -= 1

        try:
            await self.app(scope, limited, send)
        finally:
            release()

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"The request body is larger than the limit of {self.max_bytes} bytes"
        )

    async def _refuse(self, send: Send, error: AdapterError) -> None:
        body = orjson.dumps(error.operation_outcome())
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [
                    (b"content-type", b"application/fhir+json; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class CatchUnexpected:
    """Turn any unhandled exception into a bare 500 OperationOutcome and keep its text out of logs.

    Starlette's own last-resort handler re-raises, so the server would log the message (and
    whatever data it holds); this layer sits inside it and ends the story here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            from fhir_adapter.api.handlers import unexpected_error_response

            response = unexpected_error_response(exc)
            if not started:
                await response(scope, receive, send)


class AccessLog:
    """One layer for what every request leaves behind (issue #13): a request id (the caller's
    `X-Request-ID` when it is a plain token, else a new one; echoed in the answer), one access
    line (method, path with ids only, never the query string, status, time) and the Prometheus
    request count and latency by route template, never by raw path. Probes and scrapes
    (/healthz, /readyz, /metrics) are counted but logged only at DEBUG.

    It also adds the headers every answer carries (issue #16): PHI is never cached, sniffed,
    framed or sent as a referrer. One layer, not two (issue #18: each layer wraps `send`)."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.security = SecurityHeaders(hsts=hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        path = scope["path"]

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = self.security.added(path, message.get("headers", ()))
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            telemetry.observe_request(method, route, status, seconds)
            level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
            if access_log.isEnabledFor(level):
                # The fields only the JSON format prints are built only when it is on.
                extra = (
                    {
                        "request_id": request_id.decode("ascii"),
                        "method": method,
                        "route": route,
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                    }
                    if logs.structured()
                    else None
                )
                access_log.log(
                    level, "%s %s %d %.1fms", method, path, status, seconds * 1000, extra=extra
                )


_QUIET_PATHS = frozenset(("/healthz", "/readyz", "/metrics"))
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


# A new id: random per process, then a counter (cheaper than fresh randomness per request).
_ID_PREFIX = secrets.token_hex(5)
_ids = itertools.count(1)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return bytes(value)
    return f"{_ID_PREFIX}{next(_ids):06x}".encode()


def route_templates(app: Any) -> dict[int, str]:
    """id(route) -> its full path template, filled as routers are included (api/app.py): FastAPI
    puts the included route itself in the scope, whose `path` lacks the router's prefix."""
    templates: dict[int, str] | None = getattr(app.state, "route_templates", None)
    if templates is None:
        templates = app.state.route_templates = {}
    return templates


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/fhir/{resource_type}/{id}`), or `unmatched`: a
    metric label is a time series, so never the raw path with its ids."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    app = scope.get("app")
    templates = getattr(getattr(app, "state", None), "route_templates", None)
    path = templates.get(id(route)) if templates else None
    path = path or getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


# The review workspace's pages (fhir_adapter/review/): scripts and styles only from this server's
# own files (no inline script or style), forms post only here, never framed.
REVIEW_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """The headers every answer carries, added by AccessLog: the app's own win where it set one
    (its Cache-Control), and the Content-Security-Policy depends on the path."""

    _DOCS = frozenset(("/docs", "/openapi.json", "/docs/oauth2-redirect"))
    _API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")

    def __init__(self, *, hsts: bool = False) -> None:
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers.append((b"cache-control", b"no-store"))

    def added(self, path: str, given: Any) -> list[tuple[bytes, bytes]]:
        """The answer's headers with ours added (a new list: the app's is left as it was)."""
        headers = list(given)
        present = {name.lower() for name, _ in headers}
        headers.extend(h for h in self.headers if h[0] not in present)
        if path.startswith("/review"):
            headers.append((b"content-security-policy", REVIEW_CSP))
        elif path not in self._DOCS:  # the API docs page loads its scripts; the FHIR API none
            headers.append(self._API_CSP)
        return headers


class AuditLog:
    """An AuditEvent for every `/fhir` request but discovery (metadata, smart-configuration):
    reads, searches, writes, operations, and refused ones (401, 403) too."""

    _PUBLIC = ("/fhir/metadata", "/fhir/.well-known/smart-configuration")

    def __init__(self, app: ASGIApp, *, trail: Any, clock: Any, tokens: Any = None) -> None:
        self.app = app
        self.trail = trail  # services.audit.AuditTrail, or a callable returning it
        self.clock = clock
        self.tokens = tokens  # a callable returning the TokenVerifier: who sent a refused request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith(("/fhir", "/ehr/"))  # /ehr: the demo EHR inboxes (PHI)
            or path in self._PUBLIC
            or scope["method"] == "OPTIONS"  # CORS preflight: no data moves
        ):
            await self.app(scope, receive, send)
            return
        recorded = False

        async def audit(code: int, location: str | None) -> None:
            nonlocal recorded
            recorded = True
            access = scope.get("state", {}).get("access")
            if access is None and code != 401:
                access = await self._caller(scope)
            self._record(scope, code, location, access)

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                location = next(
                    (
                        value.decode("latin-1")
                        for name, value in message.get("headers", [])
                        if name.lower() == b"location"
                    ),
                    None,
                )
                # Spooled before the client sees the status (docs/durability.md): a process
                # killed right after an answer has its event on disk.
                await audit(message["status"], location)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not recorded:
                await audit(500, None)

    async def _caller(self, scope: Scope) -> Any:
        """Issue #16: a request refused before authentication (405, 406, 413, 415) is still
        recorded under the client whose valid token it carried."""
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        verifier = self.tokens() if callable(self.tokens) else None
        if scheme.lower() != "bearer" or not token.strip() or verifier is None:
            return None
        try:
            return await verifier.verify(token.strip())
        except AdapterError:
            return None

    def _record(self, scope: Scope, status: int, location: str | None, access: Any) -> None:
        interaction, resource_type, resource_id, operation = classify(
            scope["method"], scope["path"], location
        )
        client = scope.get("client")
        trail = self.trail() if callable(self.trail) else self.trail
        if trail is None:
            return
        trail.record(
            AuditRecord(
                interaction=interaction,
                status=status,
                recorded=self.clock(),
                client_id=access.client_id if access else None,
                address=client[0] if client else None,
                resource_type=resource_type,
                resource_id=resource_id,
                operation=operation,
                patient=access.patient if access else None,
            )
        )


def classify(
    method: str, path: str, location: str | None
) -> tuple[str, str | None, str | None, str | None]:
    """(restful-interaction, resource type, id, operation) of a `/fhir` request path.

    Path segments are the caller's text: only a FHIR resource type, a syntactically valid id and
    an operation this server offers are kept, so a malformed path (`/fhir/Patient/Jane Doe
    1970-01-01`, `/fhir/Patient/1/$Jane-Doe`) cannot carry names or dates into the audit trail."""
    interaction, resource_type, resource_id, operation = _classify(method, path, location)
    if resource_type is not None and not is_known_type(resource_type):
        resource_type, resource_id = None, None
    if resource_id is not None and not ID_PATTERN.match(resource_id):
        resource_id = None
    if operation is not None and operation not in _OPERATIONS:
        operation = "$unknown"
    return interaction, resource_type, resource_id, operation


# The operations the CapabilityStatement lists; any other `$name` is the caller's free text.
_OPERATIONS = frozenset(f"${name}" for ops in OPERATIONS.values() for name, _ in ops)


def _classify(
    method: str, path: str, location: str | None
) -> tuple[str, str | None, str | None, str | None]:
    if path.startswith("/ehr/"):  # the demo EHR: /ehr/{organization}/fhir[/{type}]
        parts = [p for p in path.split("/")[3:] if p]
        if method == "POST":
            return "transaction", None, None, None
        return "search-type", parts[1] if len(parts) > 1 else None, None, None
    parts = [p for p in path.split("/")[2:] if p]
    operation = next((p for p in parts if p.startswith("$")), None)
    if operation:
        resource_type = parts[0] if parts and not parts[0].startswith("$") else None
        resource_id = parts[1] if len(parts) > 2 else None
        return "operation", resource_type, resource_id, operation
    if not parts:  # the base: a transaction or batch Bundle, or a system-wide search
        return ("transaction" if method == "POST" else "search-system"), None, None, None
    resource_type = parts[0]
    if len(parts) == 1:
        if method == "POST":
            created = _created_id(location, resource_type)
            return "create", resource_type, created, None
        return "search-type", resource_type, None, None
    if parts[1] == "_search":
        return "search-type", resource_type, None, None
    resource_id = parts[1]
    if method == "PUT":
        return "update", resource_type, resource_id, None
    if len(parts) >= 3 and parts[2] == "_history":
        return ("vread" if len(parts) > 3 else "history-instance"), resource_type, resource_id, None
    return "read", resource_type, resource_id, None


def _created_id(location: str | None, resource_type: str) -> str | None:
    if not location:
        return None
    marker = f"/{resource_type}/"
    if marker not in location:
        return None
    return location.split(marker, 1)[1].split("/", 1)[0] or None
