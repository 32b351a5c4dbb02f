"""FHIR operations: `Claim/$submit` (Da Vinci PAS) and `Task/{id}/$decide` (reviewer decisions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import FhirResponse, is_pretty, read_resource_body
from fhir_adapter.services.resources import check_id
from fhir_adapter.workflow.review import parse_review

router = APIRouter(tags=["operations"])


@router.post("/Claim/$submit", summary="Da Vinci PAS: submit a prior-authorization request Bundle")
async def submit(request: Request, container: ContainerDep) -> Response:
    body = await read_resource_body(request)
    answer = await container.prior_auth.submit(body)
    return FhirResponse(answer, pretty=is_pretty(request))


@router.post("/Task/{id}/$decide", summary="A reviewer decides a pended second-opinion request")
async def decide(id: str, request: Request, container: ContainerDep) -> Response:
    check_id(id)
    review = parse_review(await read_resource_body(request))
    claim_response = await container.workflow.decide_by_reviewer(id, review)
    return FhirResponse(claim_response.content, pretty=is_pretty(request))
