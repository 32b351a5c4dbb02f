"""`POST /fhir`: transaction and batch Bundles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.access.audit import AuditRecord
from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import (
    FhirResponse,
    is_pretty,
    read_resource_body,
    return_preference,
)
from fhir_adapter.api.middleware import classify
from fhir_adapter.api.security import GuardDep

router = APIRouter(tags=["system"])


@router.post("", summary="Process a transaction or batch Bundle")
@router.post("/", include_in_schema=False)
async def process_bundle(request: Request, container: ContainerDep, guard: GuardDep) -> Response:
    body = await read_resource_body(request)
    entries = body.get("entry") if isinstance(body, dict) else None
    entries = entries if isinstance(entries, list) else []
    if guard.access is not None and len(entries) > 1:
        # Issue #16: each entry is a request; the call itself was counted on authentication.
        limited = f"client:{guard.access.client_id}"
        await container.rate_limiter.check(limited, cost=len(entries) - 1)
    response = await container.bundles.process(
        body, return_resources=return_preference(request) != "minimal", guard=guard
    )
    _audit_reads(request, container, guard, entries, response)
    return FhirResponse(response, pretty=is_pretty(request))


def _audit_reads(
    request: Request,
    container: ContainerDep,
    guard: GuardDep,
    entries: list[Any],
    response: dict[str, Any],
) -> None:
    """Issue #16: each read or search inside a batch or transaction is its own audit event,
    naming what was read (the request's own event names only the Bundle)."""
    access = guard.access
    answered = response.get("entry") or []
    for raw, answer in zip(entries, answered, strict=False):
        asked = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(asked, dict) or asked.get("method") != "GET":
            continue
        url = str(asked.get("url") or "").split("?", 1)[0].strip("/")
        interaction, resource_type, resource_id, _ = classify("GET", f"/fhir/{url}", None)
        status = str((answer.get("response") or {}).get("status") or "500").split()[0]
        container.audit.record(
            AuditRecord(
                interaction=interaction,
                status=int(status) if status.isdigit() else 500,
                recorded=container.workflow.clock(),
                client_id=access.client_id if access else None,
                address=request.client.host if request.client else None,
                resource_type=resource_type,
                resource_id=resource_id,
                patient=access.patient if access else None,
            )
        )
