"""Who may see and change what over REST (issue #16): search and read as the caller may see
them, a member's identifiers, Subscriptions owned by their client, what the plan owns, and the
server-written audit trail."""

from __future__ import annotations

import dataclasses
from typing import Any

from fhir_adapter.access.guard import Guard
from fhir_adapter.access.owners import with_owner, without_headers
from fhir_adapter.access.scopes import Interaction, Reach
from fhir_adapter.errors import ForbiddenError, MethodNotAllowedError
from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import SearchPage, StoredResource, StoreTransaction
from fhir_adapter.workflow.ownership import APPEND_ONLY, plan_owned_part
from fhir_adapter.workflow.subscriptions import view


async def search_guarded(tx: StoreTransaction, query: SearchQuery, guard: Guard) -> SearchPage:
    """A search as the caller may see it: 403 without a search scope, only their compartment for
    patient scopes, and `_include`d resources they may not read left out."""
    guard.require(query.resource_type, "s")
    page = await tx.resources.search(guard.restrict(query))
    matches = [shown(guard, r) for r in page.matches]
    if not page.included:
        return dataclasses.replace(page, matches=matches)
    return dataclasses.replace(page, matches=matches, included=guard.filter_included(page.included))


async def check_member_identifiers(tx: StoreTransaction, body: dict[str, Any], path: str) -> None:
    """Issue #16: a member's token may not file requests under an identifier system that
    organizations submit requests in (so it cannot take an identifier an EHR will use)."""
    for index, identifier in enumerate(body.get("identifier") or []):
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if not isinstance(system, str) or not system or "|" in system:
            continue
        query = parse_search(
            "ServiceRequest",
            [("identifier", f"{system}|")],
            base_url=None,
            default_count=50,
            max_count=50,
        )
        page = await tx.resources.search(dataclasses.replace(query, with_total=False))
        for found in page.matches:
            requester = str((found.content.get("requester") or {}).get("reference") or "")
            if requester and not requester.startswith(("Patient/", "RelatedPerson/")):
                where = f"{path}.identifier[{index}].system"
                raise ForbiddenError(
                    f"{where}: '{system}' is an identifier system organizations submit "
                    "requests in; a member's token cannot use it",
                    expression=where,
                )


def compartment_only(guard: Guard, resource_type: str) -> bool:
    """Whether the caller updates `resource_type` under patient scopes alone."""
    access = guard.access
    return (
        guard.patient_bound
        and access is not None
        and access.reach(resource_type, "u") is Reach.COMPARTMENT
    )


def shown(guard: Guard, stored: StoredResource) -> StoredResource:
    """A stored resource as a client sees it: a Subscription's `channel.header` is write-only."""
    if guard.access is None or stored.resource_type != "Subscription":
        return stored
    return stored.with_content(without_headers(stored.content))


def shown_result(guard: Guard, result: WriteResult) -> WriteResult:
    return dataclasses.replace(result, resource=shown(guard, result.resource))


def as_subscriber_wrote(
    guard: Guard, current: dict[str, Any] | None, body: dict[str, Any], path: str
) -> dict[str, Any]:
    """Issue #16: a Subscription belongs to the client that writes it, and tells it only what it
    may read. Headers left out of an update are kept (clients never see them to send back)."""
    if body.get("resourceType") != "Subscription" or guard.access is None:
        return body
    if view(body).content != "empty":
        guard.require(
            "ClaimResponse",
            "r",
            expression=f"{path}.channel.payload",
        )
    channel = body.get("channel")
    kept = ((current or {}).get("channel") or {}).get("header")
    if isinstance(channel, dict) and "header" not in channel and kept:
        body = {**body, "channel": {**channel, "header": kept}}
    return with_owner(body, guard.access)


def check_match_visible(guard: Guard, existing: StoredResource) -> None:
    """A conditional create that matches a resource the caller may not see must not return it."""
    if not guard.visible(existing.content):
        raise ForbiddenError(
            f"The conditional create matches a {existing.resource_type} this access token may not see"
        )


def check_plan_owned(
    guard: Guard,
    current: dict[str, Any] | None,
    body: dict[str, Any],
    interaction: Interaction,
    path: str,
) -> bool:
    """Issue #16: what the plan owns changes through the workflow or by plan staff, and the
    record of what happened (Provenance) is never rewritten."""
    resource_type = str(body.get("resourceType"))
    if current is not None and resource_type in APPEND_ONLY:
        raise ForbiddenError(
            f"{resource_type} is append-only: a recorded version is never replaced",
            expression=path,
        )
    part = plan_owned_part(resource_type, current, body)
    if part is not None and not guard.plan_staff(resource_type, interaction):
        raise ForbiddenError(
            f"{part}: it changes only through the workflow operations ($submit, $decide, "
            "consultation reports) or by plan staff (a scope naming the resource type)",
            expression=path,
        )
    # Plan staff over REST (the workflow records its own Provenance).
    return part is not None and guard.access is not None and resource_type != "Provenance"


SERVER_WRITTEN = frozenset({"AuditEvent"})


def require_client_writable(resource_type: str) -> None:
    """The audit trail is written by the server alone; no client may add to it or change it."""
    if resource_type in SERVER_WRITTEN:
        raise MethodNotAllowedError(
            f"{resource_type} is written by the server only; it is read-only", allow="GET"
        )
