"""FHIR operations: `Claim/$submit` (Da Vinci PAS) and `Task/{id}/$decide` (reviewer decisions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import FhirResponse, is_pretty, read_resource_body
from fhir_adapter.api.security import GuardDep
from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.services.resources import check_id
from fhir_adapter.workflow.review import parse_review

router = APIRouter(tags=["operations"])


@router.post("/Claim/$submit", summary="Da Vinci PAS: submit a prior-authorization request Bundle")
async def submit(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require_system("Claim", "c", "Claim/$submit")
    guard.require("ClaimResponse", "r")
    body = await read_resource_body(request)
    answer = await container.prior_auth.submit(body, guard=guard)
    return FhirResponse(answer, pretty=is_pretty(request))


@router.post("/Task/{id}/$decide", summary="A reviewer decides a pended second-opinion request")
async def decide(id: str, request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require_system("Task", "u", "Task/$decide")
    check_id(id)
    review = parse_review(await read_resource_body(request))
    claim_response = await container.workflow.decide_by_reviewer(id, review)
    return FhirResponse(claim_response.content, pretty=is_pretty(request))


@router.get("/Subscription/{id}/$status", summary="Subscription status (R4 backport)")
@router.post("/Subscription/{id}/$status", include_in_schema=False)
async def subscription_status(
    id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    await container.resources.read("Subscription", id, guard=guard)  # owners only (issue #16)
    return FhirResponse(await container.subscriptions.status(id), pretty=is_pretty(request))


@router.get("/Subscription/{id}/$events", summary="Events sent to a Subscription, for recovery")
async def subscription_events(
    id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    await container.resources.read("Subscription", id, guard=guard)  # owners only (issue #16)
    since = _event_number(request, "eventsSinceNumber", 1) or 1
    until = _event_number(request, "eventsUntilNumber", None)
    return FhirResponse(
        await container.subscriptions.events(id, since, until), pretty=is_pretty(request)
    )


def _event_number(request: Request, name: str, default: int | None) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise InvalidRequestError(f"{name} must be a whole number")
    return int(value)
