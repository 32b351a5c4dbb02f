"""`GET /fhir/metadata`: the CapabilityStatement."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import FhirResponse, is_pretty
from fhir_adapter.fhir.capability import capability_statement
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.workflow.subscriptions import TOPICS

router = APIRouter(tags=["metadata"])


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request, container: ContainerDep) -> Response:
    settings = container.settings
    statement = capability_statement(
        settings.fhir_base_url,
        published=format_instant(container.started),
        topics=TOPICS,
        token_endpoint=container.issuer.urls.token_endpoint
        if container.issuer
        else settings.auth_token_endpoint,
        cors=bool(settings.cors_origins),
    )
    return FhirResponse(statement, pretty=is_pretty(request))
