"""`POST /fhir`: transaction and batch Bundles."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import (
    FhirResponse,
    is_pretty,
    read_resource_body,
    return_preference,
)
from fhir_adapter.api.security import GuardDep

router = APIRouter(tags=["system"])


@router.post("", summary="Process a transaction or batch Bundle")
@router.post("/", include_in_schema=False)
async def process_bundle(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    body = await read_resource_body(request)
    response = await container.bundles.process(
        body, return_resources=return_preference(request) != "minimal", guard=guard
    )
    return FhirResponse(response, pretty=is_pretty(request))
