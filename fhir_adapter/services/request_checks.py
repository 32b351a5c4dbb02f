"""The checks of a REST request itself: a served type, a valid id, a body of the URL's type, an
If-Match version."""

from __future__ import annotations

import re
from typing import Any

from fhir_adapter.errors import InvalidRequestError, UnknownResourceTypeError
from fhir_adapter.fhir.references import ID_PATTERN
from fhir_adapter.fhir.resources import SERVED_TYPES, is_known_type


def require_served(resource_type: str) -> None:
    if resource_type not in SERVED_TYPES:
        raise UnknownResourceTypeError(
            f"Resource type '{resource_type}' is not served here"
            if is_known_type(resource_type)
            else f"'{resource_type}' is not a FHIR resource type"
        )


def check_id(id: str) -> None:
    if not ID_PATTERN.match(id):
        raise InvalidRequestError(
            f"'{id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
        )


def check_body_type(body: Any, resource_type: str) -> None:
    """The body must be a resource of the URL's type."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object holding a FHIR resource")
    found = body.get("resourceType")
    if found != resource_type:
        raise InvalidRequestError(
            f"resourceType '{found}' does not match the URL, which names {resource_type}",
            expression="resourceType",
        )


_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: str) -> int:
    match = _IF_MATCH.match(value)
    if not match:
        raise InvalidRequestError(f"If-Match '{value[:40]}' is not a version ETag such as W/\"3\"")
    return int(match.group(1))
