"""Da Vinci PAS `Claim/$submit`: a PAS request Bundle in, a PAS response Bundle out (fhir.md §1.2-1.4).

The request Bundle is stored as a transaction (with conditional creates, so a resubmission changes
nothing), a workflow Task is added for its ServiceRequest, and the decision comes back as the
ClaimResponse that opens the response Bundle.
"""

from __future__ import annotations

import uuid
from typing import Any

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.errors import (
    InvalidRequestError,
    TemporarilyUnavailableError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.references import rewrite_references
from fhir_adapter.fhir.search import identifier_condition
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.services.bundles import BundleService
from fhir_adapter.services.referenced import ReferencedResources
from fhir_adapter.services.resources import ResourceService
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.codes import PAS_REQUESTED_SERVICE, TASK_CODE_SYSTEM

SUBMIT_OPERATION = "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"
# Matched by their first identifier, so a resubmission (or the same resources sent by a transaction
# before) adds no copies; ServiceRequest and Task have the workflow's own resubmission check.
_MATCH_BY_IDENTIFIER = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Coverage",
    "Condition",
    "Claim",
)


class PriorAuthService:
    def __init__(
        self,
        resources: ResourceService,
        bundles: BundleService,
        referenced: ReferencedResources,
    ) -> None:
        self.resources = resources
        self.bundles = bundles
        self.referenced = referenced

    async def submit(self, body: Any, *, guard: Guard = UNRESTRICTED) -> dict[str, Any]:
        """Store and decide a PAS request Bundle; `guard` checks the caller may create each entry."""
        entries = self._check(body)
        claim_entry = entries[0]
        claim = claim_entry["resource"]
        request_url = self._requested_service(claim, entries)
        request = next(e["resource"] for e in entries if e["fullUrl"] == request_url)
        now = self.resources.clock()
        task_url = f"urn:uuid:{uuid.uuid4()}"
        requester = request.get("requester") or claim.get("provider")
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
            "focus": {"reference": request_url},
            "for": request.get("subject") or claim.get("patient"),
            "requester": requester,
            "authoredOn": format_instant(now),
        }
        if request.get("priority"):
            task["priority"] = request["priority"]
        transaction = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [self._as_post(e) for e in entries]
            + [
                {
                    "fullUrl": task_url,
                    "resource": task,
                    "request": {"method": "POST", "url": "Task"},
                }
            ],
        }
        for index, entry in enumerate(entries):
            guard.require(
                entry["resource"]["resourceType"], "c", expression=f"Bundle.entry[{index}]"
            )
        answer = await self.bundles.process(transaction)
        keys = [e["response"]["location"].split("/_history")[0] for e in answer["entry"]]
        task_key = keys[-1]
        stored_task = await self.resources.read("Task", task_key.split("/", 1)[1])
        outputs = [
            o["valueReference"]["reference"] for o in stored_task.content.get("output") or []
        ]
        claim_response = (
            await self.resources.read("ClaimResponse", outputs[-1].split("/", 1)[1])
            if outputs
            else None
        )
        if claim_response is None:  # stored, but evaluation failed: the worker will retry it
            raise TemporarilyUnavailableError(
                "The request is stored; its decision is not ready. Resubmitting is safe."
            )
        to_request_urls = {key: entry["fullUrl"] for key, entry in zip(keys, entries, strict=False)}
        response = rewrite_references(claim_response.content, to_request_urls)
        claim_identifier = (claim.get("identifier") or [None])[0]
        if claim_identifier:
            response["request"] = {**response["request"], "identifier": claim_identifier}
        response_url = f"{self.resources.base_url}/{claim_response.key}"
        referenced = await self.referenced.collect(
            response, response_url, sent={e["fullUrl"]: e["resource"] for e in entries}, guard=guard
        )
        return {
            "resourceType": "Bundle",
            "identifier": {"system": pas.TRACE_SYSTEM, "value": str(uuid.uuid4())},
            "type": "collection",
            "timestamp": format_instant(now),
            "entry": [{"fullUrl": response_url, "resource": response}, *referenced],
        }

    def _check(self, body: Any) -> list[dict[str, Any]]:
        """The PAS request Bundle rules: a collection, every entry with fullUrl and resource, Claim first."""
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise InvalidRequestError(
                "Claim/$submit takes a PAS request Bundle", expression="resourceType"
            )
        validate_resource(body)
        if body.get("type") != "collection":
            raise UnprocessableEntityError(
                f"A PAS request Bundle is a collection, not '{body.get('type')}'",
                expression="Bundle.type",
            )
        entries = body.get("entry") or []
        if not entries:
            raise UnprocessableEntityError(
                "The PAS request Bundle has no entries", expression="Bundle.entry"
            )
        for index, entry in enumerate(entries):
            if not entry.get("fullUrl") or not entry.get("resource"):
                raise UnprocessableEntityError(
                    f"Bundle.entry[{index}] needs fullUrl and resource",
                    expression=f"Bundle.entry[{index}]",
                )
        if entries[0]["resource"].get("resourceType") != "Claim":
            raise UnprocessableEntityError(
                "The first entry of a PAS request Bundle must be the Claim (PAS invariant ClaimFirst)",
                expression="Bundle.entry[0].resource",
            )
        if entries[0]["resource"].get("use") != "preauthorization":
            raise UnprocessableEntityError(
                "Claim.use must be 'preauthorization'", expression="Bundle.entry[0].resource.use"
            )
        return list(entries)

    def _requested_service(self, claim: dict[str, Any], entries: list[dict[str, Any]]) -> str:
        requests = {
            e["fullUrl"] for e in entries if e["resource"].get("resourceType") == "ServiceRequest"
        }
        for i, item in enumerate(claim.get("item") or []):
            for extension in item.get("extension") or []:
                if extension.get("url") == PAS_REQUESTED_SERVICE:
                    ref = (extension.get("valueReference") or {}).get("reference")
                    if ref in requests:
                        return str(ref)
                    raise UnprocessableEntityError(
                        f"Claim.item[{i}] requestedService '{ref}' is not a ServiceRequest in the Bundle",
                        expression=f"Bundle.entry[0].resource.item[{i}].extension",
                    )
        raise UnprocessableEntityError(
            "The Claim names no requested service (item.extension requestedService -> the ServiceRequest)",
            expression="Bundle.entry[0].resource.item",
        )

    @staticmethod
    def _as_post(entry: dict[str, Any]) -> dict[str, Any]:
        resource = entry["resource"]
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] in _MATCH_BY_IDENTIFIER:
            identifiers = resource.get("identifier")
            identifier = (
                identifiers[0] if isinstance(identifiers, list) and identifiers else identifiers
            )
            if (
                isinstance(identifier, dict)
                and identifier.get("system")
                and identifier.get("value")
            ):
                request["ifNoneExist"] = identifier_condition(
                    str(identifier["system"]), str(identifier["value"])
                )
        return {"fullUrl": entry["fullUrl"], "resource": resource, "request": request}
