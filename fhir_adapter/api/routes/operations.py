"""FHIR operations: `Claim/$submit` and `Claim/$inquire` (Da Vinci PAS), `Task/{id}/$decide` (reviewer decisions),
`MeasureReport/$pa-metrics` (CMS-0057-F metrics) and the Subscription backport operations."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import FhirResponse, is_pretty, read_resource_body
from fhir_adapter.api.security import GuardDep
from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.metrics.core import Period
from fhir_adapter.metrics.measure import measure_report
from fhir_adapter.metrics.records import parse_appeal
from fhir_adapter.services.request_checks import check_id
from fhir_adapter.workflow.review import parse_review

router = APIRouter(tags=["operations"])


@router.post("/Claim/$submit", summary="Da Vinci PAS: submit a prior-authorization request Bundle")
async def submit(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require_system("Claim", "c", "Claim/$submit")
    guard.require("ClaimResponse", "r")
    body = await read_resource_body(request)
    answer = await container.prior_auth.submit(body, guard=guard)
    return FhirResponse(answer, pretty=is_pretty(request))


@router.post(
    "/Claim/$inquire", summary="Da Vinci PAS: ask where a prior-authorization request stands"
)
async def inquire(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require("ClaimResponse", "r")  # a member's own token may ask about their requests
    body = await read_resource_body(request)
    answer = await container.prior_auth.inquire(body, guard=guard)
    return FhirResponse(answer, pretty=is_pretty(request))


@router.post("/Task/{id}/$decide", summary="A reviewer decides a pended second-opinion request")
async def decide(id: str, request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require_system("Task", "u", "Task/$decide")
    check_id(id)
    review = parse_review(await read_resource_body(request))
    claim_response = await container.workflow.decide_by_reviewer(id, review)
    return FhirResponse(claim_response.content, pretty=is_pretty(request))


@router.post(
    "/Task/{id}/$record-appeal",
    summary="Record the plan's decision on the appeal of a denied request (CMS-0057-F metrics)",
)
async def record_appeal(
    id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    guard.require_system("Task", "c", "Task/$record-appeal")
    guard.require_system("Task", "u", "Task/$record-appeal")
    check_id(id)
    appeal = parse_appeal(await read_resource_body(request))
    stored = await container.metrics.record_appeal(
        f"Task/{id}", appeal.outcome, decided_at=appeal.decided_at, received_at=appeal.received_at
    )
    return FhirResponse(stored.content, pretty=is_pretty(request))


@router.get(
    "/MeasureReport/$pa-metrics",
    summary="CMS-0057-F prior-authorization metrics of a period, as a MeasureReport",
)
async def pa_metrics(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    guard.require_system("MeasureReport", "r", "MeasureReport/$pa-metrics")
    start, end = _date_param(request, "periodStart"), _date_param(request, "periodEnd")
    if end < start:
        raise InvalidRequestError(
            f"periodEnd ({end}) is before periodStart ({start})", expression="periodEnd"
        )
    report = await container.metrics.report(Period(start, end))
    return FhirResponse(
        measure_report(report, reporter=container.settings.plan_organization),
        pretty=is_pretty(request),
    )


def _date_param(request: Request, name: str) -> date:
    """A required date parameter (YYYY-MM-DD); 400 naming it when absent or not a date."""
    value = request.query_params.get(name) or ""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    shown = f", not '{value[:40]}'" if value else ""
    raise InvalidRequestError(f"{name} must be a date, YYYY-MM-DD{shown}", expression=name)


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
