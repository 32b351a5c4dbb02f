"""The shape every Da Vinci PAS Bundle a client sends shares (request, update and inquiry
Bundles alike): a valid collection whose entries all carry fullUrl and resource, a Claim first."""

from __future__ import annotations

from typing import Any

from fhir_adapter.errors import InvalidRequestError, UnprocessableEntityError
from fhir_adapter.fhir.validation import validate_resource


def pas_entries(body: Any, *, operation: str, bundle: str) -> list[dict[str, Any]]:
    """The entries of a PAS `bundle` (its name in messages) sent to `operation`; 400/422 naming
    the element otherwise."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InvalidRequestError(f"{operation} takes a {bundle}", expression="resourceType")
    validate_resource(body)
    if body.get("type") != "collection":
        raise UnprocessableEntityError(
            f"A {bundle} is a collection, not '{body.get('type')}'", expression="Bundle.type"
        )
    entries = body.get("entry") or []
    if not entries:
        raise UnprocessableEntityError(f"The {bundle} has no entries", expression="Bundle.entry")
    for index, entry in enumerate(entries):
        if not entry.get("fullUrl") or not entry.get("resource"):
            raise UnprocessableEntityError(
                f"Bundle.entry[{index}] needs fullUrl and resource",
                expression=f"Bundle.entry[{index}]",
            )
    if entries[0]["resource"].get("resourceType") != "Claim":
        raise UnprocessableEntityError(
            f"The first entry of a {bundle} must be the Claim (PAS invariant ClaimFirst)",
            expression="Bundle.entry[0].resource",
        )
    return list(entries)
