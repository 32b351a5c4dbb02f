"""The demo EHR inboxes: where the demo directory's Endpoints point, so that `fhir-adapter demo`
shows a Consultation Report arriving at the PCP's own FHIR endpoint. In memory, bounded, loopback
only (the adapter's own deliveries come from this machine; what arrived is PHI); served only when
FHIR_ADAPTER_DEMO is on (issue #16)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.demo.responses import fhir_json
from fhir_adapter.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_RESOURCES = 1000  # across all inboxes: the demo keeps nothing for long


def _from_this_machine(request: Request) -> None:
    if request.client is None or request.client.host not in _LOOPBACK:
        raise NotFoundError("No FHIR endpoint at this address")


def ehr_router(*, max_resources: int = MAX_RESOURCES) -> APIRouter:
    """`POST /ehr/{organization}/fhir` takes transaction Bundles (conditional creates honoured);
    `GET /ehr/{organization}/fhir/{type}` lists what arrived."""
    router = APIRouter(tags=["demo EHR"])
    inboxes: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    @router.post("/{organization}/fhir")
    async def receive(organization: str, request: Request) -> Response:
        _from_this_machine(request)
        try:
            bundle = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise InvalidRequestError("the demo EHR takes a JSON transaction Bundle") from None
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        held = sum(len(inbox) for inbox in inboxes.values())
        if isinstance(entries, list) and held + len(entries) > max_resources:
            raise PayloadTooLargeError(
                f"the demo EHR inboxes hold at most {max_resources} resources"
            )
        if not isinstance(bundle, dict) or bundle.get("type") != "transaction":
            raise InvalidRequestError(
                "the demo EHR takes transaction Bundles", expression="Bundle.type"
            )
        inbox = inboxes.setdefault(organization, {})
        answers = []
        for entry in entries or []:
            if not isinstance(entry, dict):
                raise InvalidRequestError("Bundle.entry items must be objects")
            found, asked = entry.get("resource"), entry.get("request")
            resource: dict[str, Any] = found if isinstance(found, dict) else {}
            request_: dict[str, Any] = asked if isinstance(asked, dict) else {}
            condition = str(request_.get("ifNoneExist") or len(inbox))
            key = (str(resource.get("resourceType")), condition)
            answers.append({"response": {"status": "200 OK" if key in inbox else "201 Created"}})
            inbox.setdefault(key, resource)
        return fhir_json(
            {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        )

    @router.get("/{organization}/fhir/{resource_type}")
    async def received(organization: str, resource_type: str, request: Request) -> Response:
        # What arrived is PHI and this inbox has no login: show it to this machine only.
        _from_this_machine(request)
        found = [
            r for (kind, _), r in inboxes.get(organization, {}).items() if kind == resource_type
        ]
        entries = [{"resource": r} for r in found]
        return fhir_json(
            {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": entries}
        )

    return router
