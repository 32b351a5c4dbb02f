"""R4 REST: every reference a written resource makes must point somewhere (a stored resource, one
the same transaction writes, or a contained resource). References to other servers (absolute
URLs) are taken as given."""

from __future__ import annotations

from typing import Any

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.errors import InvalidRequestError, UnprocessableEntityError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import contained_ids, iter_references, parse_reference
from fhir_adapter.fhir.resources import SERVED_TYPES, is_known_type
from fhir_adapter.ports.store import StoreTransaction

LocalReference = tuple[str, str, tuple[str, str]]  # (expression, as written, (type, id))


def reference_issues(
    body: dict[str, Any], *, path: str, base_url: str, pending: frozenset[str]
) -> tuple[list[Issue], list[LocalReference]]:
    """What is wrong with the references themselves, and the local ones to look for (those not
    in `pending`, the `Type/id` keys the same transaction writes)."""
    issues: list[Issue] = []
    anchors = contained_ids(body)
    local_refs: list[LocalReference] = []
    for where, ref_object in iter_references(body, path):
        raw = ref_object["reference"]
        expression = f"{where}.reference"
        ref = parse_reference(raw, base_url=base_url)
        if ref.kind == "contained":
            if raw != "#" and raw not in anchors:
                text = f"{expression} '{raw}' names no contained resource"
                issues.append(Issue("invalid", text, expression))
        elif ref.kind == "urn":
            text = f"{expression} '{raw}' matches no fullUrl in the Bundle"
            issues.append(Issue("invalid", text, expression))
        elif ref.kind == "local" and ref.local_key:
            if ref.local_key in pending:
                continue
            if ref.resource_type not in SERVED_TYPES:
                kind = (
                    "is not stored on this server"
                    if is_known_type(ref.resource_type or "")
                    else "is not a FHIR resource type"
                )
                text = (
                    f"{expression} '{raw}': {ref.resource_type} {kind}; use an absolute reference"
                )
                issues.append(Issue("not-found", text, expression))
            else:
                local_refs.append((expression, raw, (ref.resource_type, ref.id or "")))
        elif ref.kind in ("conditional", "other"):
            text = f"{expression} '{raw}' is not a resolvable reference"
            issues.append(Issue("invalid", text, expression))
    return issues, local_refs


def stored_references(bodies: list[dict[str, Any]], base_url: str) -> list[tuple[str, str]]:
    """The `(type, id)` keys the bodies' local references name (stored or not)."""
    keys: list[tuple[str, str]] = []
    for body in bodies:
        _, local_refs = reference_issues(body, path="", base_url=base_url, pending=frozenset())
        keys += [key for _, _, key in local_refs]
    return keys


async def check_references(
    tx: StoreTransaction,
    body: dict[str, Any],
    *,
    base_url: str,
    path: str,
    pending: frozenset[str],
    guard: Guard = UNRESTRICTED,
) -> None:
    """400 for a malformed reference, 422 for one that points nowhere."""
    issues, local_refs = reference_issues(body, path=path, base_url=base_url, pending=pending)
    found = await tx.resources.existing(key for _, _, key in local_refs)
    if found and guard.patient_bound:
        # A member's own writes must not tell them which of other members' ids exist.
        stored = await tx.resources.read_many(found)
        visible = {key for key, resource in stored.items() if guard.visible(resource.content)}
        found = {k for k in found if f"{k[0]}/{k[1]}" in visible}
    for expression, raw, key in local_refs:
        if key not in found:
            text = f"{expression} '{raw}' points to a resource that does not exist"
            issues.append(Issue("not-found", text, expression))
    if not issues:
        return
    if any(i.code == "invalid" for i in issues):
        raise InvalidRequestError(issues=issues)
    raise UnprocessableEntityError(issues=issues)
