"""FHIR over HTTP: content negotiation, Prefer, request bodies and FHIR JSON responses."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.responses import Response

from fhir_adapter.errors import NotAcceptableError, UnsupportedMediaTypeError
from fhir_adapter.fhir import bundles
from fhir_adapter.fhir.bundles import etag
from fhir_adapter.fhir.validation import parse_json
from fhir_adapter.ports.store import StoredResource

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
_JSON_FORMATS = {"json", *_JSON_TYPES}
_XML_FORMATS = {
    "xml",
    "text/xml",
    "application/xml",
    "application/fhir+xml",
    "application/xml+fhir",
}
_ACCEPT_ANY = {"*/*", "application/*", *_JSON_TYPES}

ReturnPreference = Literal["minimal", "representation", "OperationOutcome"]


class FhirResponse(Response):
    """FHIR JSON, serialized with orjson; `_pretty=true` indents it. The body is rendered before
    the headers are built, so they are built once (issue #18: editing them after cost more than
    serialising a Task)."""

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        *,
        pretty: bool = False,
    ) -> None:
        self.pretty = pretty
        super().__init__(content, status_code, headers)

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 if self.pretty else 0)


async def check_negotiation(request: Request) -> None:
    """JSON is all we speak: `_format` and Accept asking for anything else get a 406."""
    requested = request.query_params.get("_format")
    if requested is not None:
        fmt = requested.split(";")[0].strip().lower()
        if fmt in _XML_FORMATS:
            raise NotAcceptableError(
                "This server speaks FHIR JSON only; _format=xml is not supported"
            )
        if fmt not in _JSON_FORMATS:
            raise NotAcceptableError(f"_format '{requested[:60]}' is not supported; use json")
        return
    accept = request.headers.get("accept")
    if accept:
        ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if not ranges & _ACCEPT_ANY:
            raise NotAcceptableError(
                f"Cannot answer in '{accept[:80]}'; this server answers {FHIR_JSON}"
            )


async def read_resource_body(request: Request) -> Any:
    """The request body as decoded JSON, after checking its media type and depth."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media not in _JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type '{content_type[:80] or '(none)'}' is not supported; send {FHIR_JSON}"
        )
    settings = request.app.state.container.settings
    return parse_json(await request.body(), max_depth=settings.max_json_depth)


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header as a dict, e.g. {'return': 'minimal', 'handling': 'strict'}."""
    prefs: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs


def return_preference(request: Request) -> ReturnPreference:
    value = prefer(request).get("return", "representation")
    if value == "minimal":
        return "minimal"
    if value.lower() == "operationoutcome":
        return "OperationOutcome"
    return "representation"


def is_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def stored_body(stored: bundles.StoredResource) -> Any:
    """What an answer carries of a stored version: the JSON text it was stored as, spliced in by
    orjson as it is, when it has it (issue #18: decoding and encoding a page of 50 again was a
    fifth of its CPU); else its content."""
    if stored.json is not None:
        return orjson.Fragment(stored.json)
    return stored.content


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {
        "ETag": etag(stored.version_id),
        "Last-Modified": format_datetime(stored.last_updated, usegmt=True),
    }
