"""The demo EHR inboxes: where the demo directory's Endpoints point, so that `fhir-adapter demo`
shows a Consultation Report arriving at the PCP's own FHIR endpoint. In memory; demo only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.fhir_http import FhirResponse
from fhir_adapter.errors import InvalidRequestError, NotFoundError

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def ehr_router() -> APIRouter:
    """`POST /ehr/{organization}/fhir` takes transaction Bundles (conditional creates honoured);
    `GET /ehr/{organization}/fhir/{type}` lists what arrived."""
    router = APIRouter(tags=["demo EHR"])
    inboxes: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    @router.post("/{organization}/fhir")
    async def receive(organization: str, request: Request) -> Response:
        bundle = await request.json()
        if not isinstance(bundle, dict) or bundle.get("type") != "transaction":
            raise InvalidRequestError(
                "the demo EHR takes transaction Bundles", expression="Bundle.type"
            )
        inbox = inboxes.setdefault(organization, {})
        answers = []
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") or {}
            condition = (entry.get("request") or {}).get("ifNoneExist") or str(len(inbox))
            key = (str(resource.get("resourceType")), condition)
            answers.append({"response": {"status": "200 OK" if key in inbox else "201 Created"}})
            inbox.setdefault(key, resource)
        return FhirResponse(
            {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        )

    @router.get("/{organization}/fhir/{resource_type}")
    async def received(organization: str, resource_type: str, request: Request) -> Response:
        # What arrived is PHI and this inbox has no login: show it to this machine only.
        if request.client is None or request.client.host not in _LOOPBACK:
            raise NotFoundError("No FHIR endpoint at this address")
        found = [
            r for (kind, _), r in inboxes.get(organization, {}).items() if kind == resource_type
        ]
        entries = [{"resource": r} for r in found]
        return FhirResponse(
            {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": entries}
        )

    return router
