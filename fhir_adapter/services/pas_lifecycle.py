"""The PAS request after `$submit` (issue #12): `Claim/$inquire`, and the updates and
cancellations a later `$submit` carries (PAS IG, specification: "Prior Authorization
Inquiries", "Updating Authorization Requests").

A request is found from what its submitter knows: the Claim it sent (its identifier) or the
member. Only the submitting client, or the member's own token, learns that it exists; to anyone
else an inquiry or an update finds nothing, in the very words it would use if nothing matched.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fhir_adapter.access.guard import Guard
from fhir_adapter.codes import TASK_CODE_SYSTEM
from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.bundle_references import BundleReferences, resolve_bundle_references
from fhir_adapter.fhir.dates import date_range, format_instant, period_range
from fhir_adapter.fhir.elements import local_key, reference_of
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.pas_bundle import pas_entries
from fhir_adapter.fhir.search import identifier_condition
from fhir_adapter.ports.store import StoredResource
from fhir_adapter.services.callers import may_see_request
from fhir_adapter.services.referenced import ReferencedResources
from fhir_adapter.services.resources import ResourceService
from fhir_adapter.services.second_opinion.service import SecondOpinionWorkflow
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.pas_changes import (
    INFO_CHANGED,
    change_of,
    related_claim_reference,
    submitter_of,
)

if TYPE_CHECKING:
    from fhir_adapter.services.prior_auth import PriorAuthService

INQUIRE_OPERATION = "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-inquiry"
MEMBER_ID_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MB")
_RELATED = "Bundle.entry[0].resource.related[0].claim"
_NO_MATCH = (
    "No prior authorization request of this submitter matches: the Claim named in "
    "Claim.related.claim is not one this plan received from you"
)

log = logging.getLogger(__name__)


class _Found:
    """A request as stored: its Task (none for an administrative decision) and ClaimResponse."""

    def __init__(self, task: StoredResource | None, response: StoredResource | None) -> None:
        self.task = task
        self.response = response

    @property
    def submitter(self) -> str | None:
        holder = self.task or self.response
        return submitter_of(holder.content) if holder else None

    @property
    def patient_reference(self) -> str | None:
        if self.task is not None:
            return reference_of(self.task.content.get("for")) or None
        if self.response is not None:
            return reference_of(self.response.content.get("patient"))
        return None


class PasLookup:
    """Finds stored PAS requests by the submitter's Claim identifier or by the member."""

    def __init__(self, resources: ResourceService) -> None:
        self.resources = resources

    async def by_claim_identifier(self, identifier: dict[str, Any]) -> _Found | None:
        system, value = identifier.get("system"), identifier.get("value")
        if not system or not value:
            return None
        condition = identifier_condition(str(system), str(value))
        async with self.resources.store.transaction(write=False) as tx:
            claim = await self.resources.find_conditional(tx, "Claim", condition, lock=False)
            if claim is None:  # an administrative decision keeps no Claim, only its number
                response = await self.resources.find_conditional(
                    tx, "ClaimResponse", condition, lock=False
                )
                return _Found(None, response) if response else None
            found = await self._task_of(tx, claim)
        return found

    async def _task_of(self, tx: Any, claim: StoredResource) -> _Found | None:
        base = self.resources.base_url
        for item in claim.content.get("item") or []:
            for extension in item.get("extension") or []:
                key = local_key(reference_of(extension.get("valueReference")), base)
                if not key or key.type != "ServiceRequest":
                    continue
                query = self.resources.parse_query(
                    "Task", [("focus", str(key)), ("code", f"{TASK_CODE_SYSTEM}|fulfill")]
                )
                page = await tx.resources.search(query)
                if page.matches:
                    task = page.matches[0]
                    response = await self.resources.find_conditional(
                        tx, "ClaimResponse", f"identifier={pas.TRACE_SYSTEM}|{task.id}", lock=False
                    )
                    return _Found(task, response)
        return None


class PasChanges:
    """A `$submit` whose Claim names an earlier one in `Claim.related.claim`."""

    def __init__(
        self,
        resources: ResourceService,
        workflow: SecondOpinionWorkflow,
        lookup: PasLookup,
    ) -> None:
        self.resources = resources
        self.workflow = workflow
        self.lookup = lookup

    async def apply(
        self,
        submit: PriorAuthService,
        entries: list[dict[str, Any]],
        resolved: BundleReferences,
        *,
        guard: Guard,
    ) -> dict[str, Any]:
        claim = entries[0]["resource"]
        reference = related_claim_reference(claim)
        target = resolved.target(0, reference) if reference else None
        if target is None or entries[target]["resource"].get("resourceType") != "Claim":
            raise UnprocessableEntityError(
                f"{_RELATED}: the Claim being updated must be in the Bundle (PAS spec-65)",
                expression=_RELATED,
            )
        earlier = entries[target]["resource"]
        identifier = (earlier.get("identifier") or [{}])[0]
        found = await self.lookup.by_claim_identifier(identifier)
        if found is None or not may_see_request(
            guard, submitter=found.submitter, patient_reference=found.patient_reference
        ):
            raise UnprocessableEntityError(issues=[Issue("not-found", _NO_MATCH, _RELATED)])
        change = change_of(claim)
        number = (claim.get("identifier") or [{}])[0].get("value") or "without identifier"
        if found.task is None:  # an administrative decision: final when it was made
            raise UnprocessableEntityError(
                issues=[Issue("business-rule", _decided_message("decided", change), _RELATED)]
            )
        if change == "cancel":  # the submitter's own request: no Task scope needed (PAS)
            result = await self.workflow.cancel(
                found.task.id, reason=f"PAS Claim {number} (certificationType 3, Cancel)"
            )
            return await self._answer(submit, result, claim, entries, guard=guard)
        status = found.task.content.get("status")
        if status not in ("requested", "received", "on-hold"):
            raise UnprocessableEntityError(
                issues=[Issue("business-rule", _decided_message(str(status), change), _RELATED)]
            )
        await self._store_changes(submit, entries, resolved, target, found.task, guard=guard)
        changed = sorted(
            str(item.get("sequence"))
            for item in claim.get("item") or []
            if any(e.get("url") == INFO_CHANGED for e in item.get("extension") or [])
        )
        note = f"Updated by PAS Claim {number}" + (
            f" (items changed: {', '.join(changed)})" if changed else ""
        )
        await self.workflow.amend(found.task.id, note=note)
        response = await self.lookup.by_claim_identifier(identifier)
        assert response is not None and response.response is not None
        return await self._answer(submit, response.response, claim, entries, guard=guard)

    async def _store_changes(
        self,
        submit: PriorAuthService,
        entries: list[dict[str, Any]],
        resolved: BundleReferences,
        earlier: int,
        task: StoredResource,
        *,
        guard: Guard,
    ) -> None:
        """The update's ServiceRequest replaces the stored one (same identifier); what it newly
        names (a new selected provider, a new Condition) is created; the Claims are not kept
        again (the stored one stays the request's Claim)."""
        index = submit.requested_service(entries[0]["resource"], entries, resolved)
        focus = local_key(reference_of(task.content.get("focus")), self.resources.base_url)
        assert focus is not None
        stored = await self.resources.read(*focus)
        where = "Bundle.entry[0].resource.item"
        if index is None:
            raise UnprocessableEntityError(
                f"{where}: an update names the request's ServiceRequest in requestedService",
                expression=where,
            )
        request = entries[index]["resource"]
        if not _same_identifier(request, stored.content):
            where = f"Bundle.entry[{index}].resource.identifier"
            raise UnprocessableEntityError(
                f"{where}: the updated ServiceRequest must keep the identifier of the one it "
                "replaces",
                expression=where,
            )
        kept = submit.kept_entries(entries, resolved)
        claims = {entries[0]["fullUrl"], entries[earlier]["fullUrl"]}
        transaction_entries = []
        for entry in kept:
            if entry["fullUrl"] in claims:
                continue
            if entry["fullUrl"] == entries[index]["fullUrl"]:
                guard.require("ServiceRequest", "u", expression=f"Bundle.entry[{index}]")
                transaction_entries.append(
                    {
                        "fullUrl": entry["fullUrl"],
                        "resource": {**entry["resource"], "id": stored.id},
                        "request": {"method": "PUT", "url": stored.key},
                    }
                )
            else:
                guard.require(entry["resource"]["resourceType"], "c")
                transaction_entries.append(submit.as_post(entry))
        await submit.bundles.process(
            {"resourceType": "Bundle", "type": "transaction", "entry": transaction_entries}
        )

    async def _answer(
        self,
        submit: PriorAuthService,
        result: StoredResource,
        claim: dict[str, Any],
        entries: list[dict[str, Any]],
        *,
        guard: Guard,
    ) -> dict[str, Any]:
        return await submit.answer(result, claim, entries, {}, guard=guard)


def _decided_message(status: str, change: str) -> str:
    what = "cancelled" if change == "cancel" else "updated"
    return (
        f"The request is {status}: a decided request is not {what} here. PAS: an update to a "
        "denied request is not permitted and a new request must be submitted (specification, "
        "Additional Notes 2; spec-64)"
    )


def _same_identifier(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def pairs(r: dict[str, Any]) -> set[tuple[Any, Any]]:
        return {(i.get("system"), i.get("value")) for i in r.get("identifier") or []}

    return bool(pairs(a) & pairs(b))


class PasInquiry:
    """`Claim/$inquire`: query by example over the requests this plan holds."""

    def __init__(
        self, resources: ResourceService, referenced: ReferencedResources, lookup: PasLookup
    ) -> None:
        self.resources = resources
        self.referenced = referenced
        self.lookup = lookup

    async def inquire(self, body: Any, *, guard: Guard) -> dict[str, Any]:
        entries = check_inquiry(body)
        claim = entries[0]["resource"]
        resolved = resolve_bundle_references(
            [(e["fullUrl"], e["resource"]) for e in entries], server_base=self.resources.base_url
        )
        # Only the member must resolve (a query by example: the rest is context, not stored).
        members = _member_identifiers(entries, resolved)
        window = _inquiry_window(claim)
        candidates: dict[str, _Found] = {}
        for identifier in _claim_identifiers(claim):
            found = await self.lookup.by_claim_identifier(identifier)
            if found is not None and found.response is not None:
                candidates[found.response.key] = found
        for found in await self._by_member(members):
            if found.response is not None:
                candidates.setdefault(found.response.key, found)
        bundles = []
        for found in candidates.values():
            if not _for_member(found, members, await self._patient_identifiers(found)):
                continue
            if window is not None and not _received_within(found, window):
                continue
            if not may_see_request(
                guard, submitter=found.submitter, patient_reference=found.patient_reference
            ):
                continue
            assert found.response is not None
            bundles.append(await self._response_bundle(found.response, body, guard=guard))
        log.info("PAS inquiry: %d match(es)", len(bundles))
        parameters: dict[str, Any] = {
            "resourceType": "Parameters",
            "parameter": [{"name": "return", "resource": b} for b in bundles],
        }
        if not bundles:
            parameters["parameter"] = [
                {
                    "name": "outcome",
                    "resource": {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "information",
                                "code": "not-found",
                                "diagnostics": "No prior authorization request on record for "
                                "this submitter matches the inquiry (member, identifiers)",
                            }
                        ],
                    },
                }
            ]
        return parameters

    async def _by_member(self, members: list[dict[str, Any]]) -> list[_Found]:
        """The second-opinion requests of the stored Patients carrying the member identifier."""
        found: list[_Found] = []
        async with self.resources.store.transaction(write=False) as tx:
            for member in members:
                condition = [("identifier", f"{member.get('system', '')}|{member['value']}")]
                patients = await tx.resources.search(
                    self.resources.parse_query("Patient", condition)
                )
                for patient in patients.matches:
                    query = self.resources.parse_query(
                        "Task",
                        [
                            ("patient", patient.key),
                            ("code", f"{TASK_CODE_SYSTEM}|fulfill"),
                            ("_count", "50"),
                        ],
                    )
                    for task in (await tx.resources.search(query)).matches:
                        response = await self.resources.find_conditional(
                            tx,
                            "ClaimResponse",
                            f"identifier={pas.TRACE_SYSTEM}|{task.id}",
                            lock=False,
                        )
                        found.append(_Found(task, response))
        return found

    async def _patient_identifiers(self, found: _Found) -> list[dict[str, Any]]:
        """The member identifiers of the request's patient: the stored Patient's, or the
        logical identifier an administrative ClaimResponse names the member by."""
        assert found.response is not None
        patient = found.response.content.get("patient") or {}
        if isinstance(patient.get("identifier"), dict):
            return [patient["identifier"]]
        key = local_key(found.patient_reference, self.resources.base_url)
        if not key or key.type != "Patient":
            return []
        async with self.resources.store.transaction(write=False) as tx:
            stored = await tx.resources.read(*key)
        return list((stored.content if stored else {}).get("identifier") or [])

    async def _response_bundle(
        self, response: StoredResource, inquiry: dict[str, Any], *, guard: Guard
    ) -> dict[str, Any]:
        """A PAS Inquiry Response Bundle: the current ClaimResponse first, what it references."""
        url = f"{self.resources.base_url}/{response.key}"
        referenced = await self.referenced.collect(response.content, url, guard=guard)
        return {
            "resourceType": "Bundle",
            "identifier": inquiry.get("identifier")
            or {"system": pas.TRACE_SYSTEM, "value": str(uuid.uuid4())},
            "type": "collection",
            "timestamp": format_instant(self.resources.clock()),
            "entry": [{"fullUrl": url, "resource": response.content}, *referenced],
        }


def check_inquiry(body: Any) -> list[dict[str, Any]]:
    """The PAS Inquiry Request Bundle rules: a collection, Claim first, and the Claim names the
    member (a Patient in the Bundle with an identifier), the provider and the payer (IG: the
    X12 requester, UMO and patient loops)."""
    entries = pas_entries(body, operation="Claim/$inquire", bundle="PAS Inquiry Request Bundle")
    claim = entries[0]["resource"]
    for element in ("patient", "provider", "insurer"):
        if not (claim.get(element) or {}).get("reference"):
            where = f"Bundle.entry[0].resource.{element}"
            raise UnprocessableEntityError(
                f"{where}: a PAS inquiry names the {element} (PAS: requester, UMO and patient)",
                expression=where,
            )
    return list(entries)


def _member_identifiers(
    entries: list[dict[str, Any]], resolved: BundleReferences
) -> list[dict[str, Any]]:
    """The member identifier (type MB, else any identifier) of the Patient the inquiry names."""
    where = "Bundle.entry[0].resource.patient"
    reference = entries[0]["resource"]["patient"]["reference"]
    target = resolved.target(0, reference)
    patient = entries[target]["resource"] if target is not None else None
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise UnprocessableEntityError(
            f"{where}: the member must be a Patient in the Bundle", expression=where
        )
    identifiers = [i for i in patient.get("identifier") or [] if i.get("value")]
    typed = [
        i
        for i in identifiers
        if any(
            (c.get("system"), c.get("code")) == MEMBER_ID_TYPE
            for c in (i.get("type") or {}).get("coding") or []
        )
    ]
    if not identifiers:
        where = f"Bundle.entry[{target}].resource.identifier"
        raise UnprocessableEntityError(
            f"{where}: the member is named by their member identifier (type MB)", expression=where
        )
    return typed or identifiers


def _claim_identifiers(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """The request numbers an inquiry may carry: Claim.identifier (the IG's own inquiry example
    repeats the request's trace number there)."""
    return [i for i in claim.get("identifier") or [] if i.get("system") and i.get("value")]


def _for_member(found: _Found, members: list[dict[str, Any]], stored: list[dict[str, Any]]) -> bool:
    """PAS spec-53: a match needs the member identifier, whatever else matched."""
    have = {(i.get("system"), i.get("value")) for i in stored}
    return any(
        (m.get("system"), m.get("value")) in have
        or (not m.get("system") and m.get("value") in {v for _, v in have})
        for m in members
    )


def _inquiry_window(claim: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """The dates an inquiry asks about: Claim.billablePeriod (the IG's MS date element)."""
    period = claim.get("billablePeriod")
    if not isinstance(period, dict):
        return None
    window = period_range(period)
    if window is None:
        where = "Bundle.entry[0].resource.billablePeriod"
        raise UnprocessableEntityError(f"{where}: a start or an end date", expression=where)
    return window


def _received_within(found: _Found, window: tuple[datetime, datetime]) -> bool:
    """Whether the request was received (Task.authoredOn; an administrative decision's
    ClaimResponse.created) within the inquiry's dates."""
    holder = found.task or found.response
    assert holder is not None
    when = holder.content.get("authoredOn") or holder.content.get("created")
    covered = date_range(str(when)) if when else None
    return covered is not None and window[0] <= covered[0] <= window[1]
