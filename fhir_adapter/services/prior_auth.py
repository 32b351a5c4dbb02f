"""Da Vinci PAS `Claim/$submit`: a PAS request Bundle in, a PAS response Bundle out (fhir.md §1.2-1.4).

The request Bundle is stored as a transaction (with conditional creates, so a resubmission changes
nothing), a workflow Task is added for its ServiceRequest, and the decision comes back as the
ClaimResponse that opens the response Bundle.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.codes import PAS_REQUESTED_SERVICE
from fhir_adapter.errors import (
    TemporarilyUnavailableError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir.bundle_references import (
    BundleReferences,
    resolve_bundle_references,
    rewrite_entry_references,
)
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import ResourceKey
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.pas_bundle import pas_entries
from fhir_adapter.fhir.references import rewrite_references
from fhir_adapter.fhir.resources import SERVED_TYPES
from fhir_adapter.fhir.search import identifier_condition
from fhir_adapter.policy.decision import Decision
from fhir_adapter.ports.store import StoredResource
from fhir_adapter.services.bundles import BundleService
from fhir_adapter.services.callers import caller_client
from fhir_adapter.services.referenced import ReferencedResources
from fhir_adapter.services.resources import ResourceService
from fhir_adapter.workflow import pas, pas_changes
from fhir_adapter.workflow.administrative import administrative_decision
from fhir_adapter.workflow.intake import is_second_opinion_request
from fhir_adapter.workflow.pas_submission import (
    fulfillment_task,
    name_submission,
    submitted_bundle_document,
)
from fhir_adapter.workflow.plan import PayorVerdict, identifiers_of, payor_verdict, plan_references

# What submit and inquire need of the PAS lifecycle (services/pas_lifecycle.py implements these
# and imports this module, so this module names only their shape: no import cycle).
_Entries = list[dict[str, Any]]


class _Pends(Protocol):
    async def pend_unanswered(self, task_id: str) -> None: ...


class PasChanges(Protocol):
    @property
    def workflow(self) -> _Pends: ...

    async def apply(
        self,
        submit: PriorAuthService,
        entries: _Entries,
        resolved: BundleReferences,
        *,
        guard: Guard,
    ) -> dict[str, Any]: ...


class PasInquiry(Protocol):
    async def inquire(self, body: Any, *, guard: Guard) -> dict[str, Any]: ...


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
        *,
        plan_organization: str = "Organization/demo-plan",
        directory_url: str | None = None,
    ) -> None:
        self.resources = resources
        self.bundles = bundles
        self.referenced = referenced
        self.plan_organization = plan_organization
        self.directory_url = directory_url
        self.changes: PasChanges | None = None  # updates and cancellations (bootstrap sets it)
        self.inquiry: PasInquiry | None = None  # Claim/$inquire (bootstrap sets it)

    async def inquire(self, body: Any, *, guard: Guard = UNRESTRICTED) -> dict[str, Any]:
        """`Claim/$inquire` (PAS): Parameters with a PAS Inquiry Response Bundle per match."""
        assert self.inquiry is not None, "bootstrap wires the PAS inquiry"
        return await self.inquiry.inquire(body, guard=guard)

    def requested_service(
        self, claim: dict[str, Any], entries: list[dict[str, Any]], resolved: BundleReferences
    ) -> int | None:
        return self._requested_service(claim, entries, resolved)

    def kept_entries(
        self, entries: list[dict[str, Any]], resolved: BundleReferences
    ) -> list[dict[str, Any]]:
        return self._kept_entries(entries, resolved)

    def as_post(self, entry: dict[str, Any]) -> dict[str, Any]:
        return self._as_post(entry)

    async def submit(self, body: Any, *, guard: Guard = UNRESTRICTED) -> dict[str, Any]:
        """Store and decide a PAS request Bundle; `guard` checks the caller may create each entry."""
        entries = self._check(body)
        claim = entries[0]["resource"]
        resolved = resolve_bundle_references(
            [(e["fullUrl"], e["resource"]) for e in entries], server_base=self.resources.base_url
        )
        if resolved.issues:
            raise UnprocessableEntityError(issues=list(resolved.issues))
        if pas_changes.related_claim_reference(claim) is not None and self.changes is not None:
            return await self.changes.apply(self, entries, resolved, guard=guard)
        request_index = self._requested_service(claim, entries, resolved)
        if request_index is None:
            return await self._decide_administratively(body, entries, resolved, guard=guard)
        task_url = f"urn:uuid:{uuid.uuid4()}"
        task = fulfillment_task(
            claim, entries, resolved, request_index, self.resources.clock(), caller_client(guard)
        )
        kept = self._kept_entries(entries, resolved)
        transaction = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [self._as_post(e) for e in kept]
            + [
                {
                    "fullUrl": task_url,
                    "resource": task,
                    "request": {"method": "POST", "url": "Task"},
                }
            ],
        }
        for index, entry in enumerate(entries):
            if entry["resource"]["resourceType"] in SERVED_TYPES:
                guard.require(
                    entry["resource"]["resourceType"], "c", expression=f"Bundle.entry[{index}]"
                )
        answer = await self.bundles.process(transaction)
        keys = [e["response"]["location"].split("/_history")[0] for e in answer["entry"]]
        claim_response = await self._decision_of(ResourceKey.parse(keys[-1]).id)
        if claim_response is None:  # stored, but evaluation failed: the worker will retry it
            raise TemporarilyUnavailableError(
                "The request is stored; its decision is not ready. Resubmitting is safe."
            )
        to_request_urls = {key: entry["fullUrl"] for key, entry in zip(keys, kept, strict=False)}
        return await self.answer(claim_response, claim, entries, to_request_urls, guard=guard)

    async def _decision_of(self, task_id: str) -> StoredResource | None:
        """The ClaimResponse the evaluation of Task `task_id` output (pended when it gave none)."""
        stored_task = await self.resources.read("Task", task_id)
        outputs = [
            o["valueReference"]["reference"] for o in stored_task.content.get("output") or []
        ]
        if not outputs and self.changes is not None:  # PAS spec-7: answer pended, not 503
            await self.changes.workflow.pend_unanswered(task_id)
            stored_task = await self.resources.read("Task", task_id)
            outputs = [
                o["valueReference"]["reference"] for o in stored_task.content.get("output") or []
            ]
        return (
            await self.resources.read("ClaimResponse", ResourceKey.parse(outputs[-1]).id)
            if outputs
            else None
        )

    async def answer(
        self,
        claim_response: StoredResource,
        claim: dict[str, Any],
        entries: list[dict[str, Any]],
        to_request_urls: dict[str, str],
        *,
        guard: Guard,
    ) -> dict[str, Any]:
        """The PAS response Bundle: the ClaimResponse (naming what the request sent by the
        fullUrls it sent them under) and what it references."""
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
            "timestamp": format_instant(self.resources.clock()),
            "entry": [{"fullUrl": response_url, "resource": response}, *referenced],
        }

    def _check(self, body: Any) -> list[dict[str, Any]]:
        """The PAS request Bundle rules: a collection, every entry with fullUrl and resource, Claim first."""
        entries = pas_entries(body, operation="Claim/$submit", bundle="PAS request Bundle")
        if entries[0]["resource"].get("use") != "preauthorization":
            raise UnprocessableEntityError(
                "Claim.use must be 'preauthorization'", expression="Bundle.entry[0].resource.use"
            )
        return list(entries)

    def _requested_service(
        self, claim: dict[str, Any], entries: list[dict[str, Any]], resolved: BundleReferences
    ) -> int | None:
        """The index of the second-opinion ServiceRequest the Claim's requestedService names
        (resolved by the R4 rules: a relative reference against the Claim's fullUrl base); None
        when the Claim asks for something else (the IG's referrals, home care, surgery, ...)."""
        for item in claim.get("item") or []:
            for extension in item.get("extension") or []:
                if extension.get("url") == PAS_REQUESTED_SERVICE:
                    ref = (extension.get("valueReference") or {}).get("reference")
                    target = resolved.target(0, ref) if isinstance(ref, str) else None
                    if target is not None and is_second_opinion_request(
                        entries[target]["resource"]
                    ):
                        return target
        return None

    async def _decide_administratively(
        self,
        body: dict[str, Any],
        entries: list[dict[str, Any]],
        resolved: BundleReferences,
        *,
        guard: Guard,
    ) -> dict[str, Any]:
        """A PAS request that is not a second-opinion request (issue #10: the IG's own examples):
        the coverage it names is still checked, and an administrative fact (coverage inactive or
        not with this plan) is a decision, recorded with the request it answers. A request of this
        plan's member for anything else is not this adapter's to decide: 422, nothing stored."""
        guard.require("Claim", "c", expression="Bundle.entry[0]")
        claim = entries[0]["resource"]
        insurance = next(
            (i for i in claim.get("insurance") or [] if i.get("focal")),
            (claim.get("insurance") or [{}])[0],
        )
        where = "Bundle.entry[0].resource.insurance"
        coverage_ref = (insurance.get("coverage") or {}).get("reference")
        target = resolved.target(0, coverage_ref) if isinstance(coverage_ref, str) else None
        coverage = entries[target]["resource"] if target is not None else None
        if (
            target is None
            or not isinstance(coverage, dict)
            or coverage.get("resourceType") != "Coverage"
        ):
            raise UnprocessableEntityError(
                f"{where}: the focal coverage must be a Coverage in the Bundle", expression=where
            )
        now = self.resources.clock()
        plan_ids = await self._plan_identifiers()
        verdicts = [
            self._payor_verdict(payor, target, entries, resolved, plan_ids)
            for payor in coverage.get("payor") or []
        ]
        decision = administrative_decision(
            now=now,
            coverage=coverage,
            plan_reference=self.plan_organization,
            payor_is_plan="plan" in verdicts,
            payor_unsettled="ask-directory" in verdicts,
        )
        if decision is None or not decision.outcome.is_final:
            if decision is not None:  # a payor only the unreachable directory could identify
                raise TemporarilyUnavailableError(
                    "The provider directory cannot say whether the payor is this plan; "
                    "nothing was stored and resubmitting is safe."
                )
            raise UnprocessableEntityError(
                "Bundle.entry[0].resource.item: this adapter decides second-opinion requests; the "
                "Claim's requestedService must name a ServiceRequest with the second-opinion category",
                expression="Bundle.entry[0].resource.item",
            )
        patient = _logical(claim.get("patient"), entries, resolved)
        return await self._record_administrative(
            body, decision, now, claim=claim, patient=patient, guard=guard
        )

    def _payor_verdict(
        self,
        payor: dict[str, Any],
        holder: int,
        entries: list[dict[str, Any]],
        resolved: BundleReferences,
        plan_ids: frozenset[tuple[str | None, str]],
    ) -> PayorVerdict:
        """Whether one Coverage.payor (in entry `holder`) names the plan, in any of its forms."""
        reference = payor.get("reference")
        in_bundle = resolved.target(holder, reference) if isinstance(reference, str) else None
        names = plan_references(
            self.plan_organization,
            base_url=self.resources.base_url,
            directory_url=self.directory_url,
        )
        return payor_verdict(
            payor,
            plan_names=names,
            plan_identifiers=plan_ids,
            resolve=lambda _: entries[in_bundle]["resource"] if in_bundle is not None else None,
            directory_url=self.directory_url,
        )

    async def _record_administrative(
        self,
        body: dict[str, Any],
        decision: Decision,
        now: datetime,
        *,
        claim: dict[str, Any],
        patient: dict[str, Any],
        guard: Guard,
    ) -> dict[str, Any]:
        """The ClaimResponse (naming the submitter's Claim and member logically: their resources
        are not ours to keep) and the submitted Bundle itself, kept as a DocumentReference."""
        trace = str(uuid.uuid4())
        response = pas.build_claim_response(
            decision,
            task_id=trace,
            claim_key="Claim/placeholder",
            patient="Patient/placeholder",
            insurer=self.plan_organization,
            requestor=None,
            now=now,
        )
        name_submission(response, claim, patient, caller_client(guard))
        response_key = f"ClaimResponse/{self.resources.new_id()}"
        kept = submitted_bundle_document(body, patient, now, response_key)
        # Both built valid by construction (issue #13: not re-parsed on every request);
        # tests/e2e/test_emitted_resources.py validates them.
        async with (
            self.resources.store.transaction() as tx
        ):  # the answer and its request, or neither
            stored = await self.resources.create_in(
                tx,
                response,
                path="ClaimResponse",
                pending=frozenset({response_key}),
                id=ResourceKey.parse(response_key).id,
            )
            await self.resources.create_in(
                tx, kept, path="DocumentReference", pending=frozenset({response_key})
            )
        response_url = f"{self.resources.base_url}/{stored.resource.key}"
        referenced = await self.referenced.collect(
            stored.resource.content, response_url, sent={}, guard=guard
        )
        return {
            "resourceType": "Bundle",
            "identifier": {"system": pas.TRACE_SYSTEM, "value": trace},
            "type": "collection",
            "timestamp": format_instant(now),
            "entry": [{"fullUrl": response_url, "resource": stored.resource.content}, *referenced],
        }

    async def _plan_identifiers(self) -> frozenset[tuple[str | None, str]]:
        """The identifiers of the plan's Organization as stored here (bootstrap stores it)."""
        if "://" in self.plan_organization or self.plan_organization.count("/") != 1:
            return frozenset()
        async with self.resources.store.transaction(write=False) as tx:
            plan = await tx.resources.read(*ResourceKey.parse(self.plan_organization))
        return identifiers_of(plan.content if plan else None)

    @staticmethod
    def _kept_entries(
        entries: list[dict[str, Any]], resolved: BundleReferences
    ) -> list[dict[str, Any]]:
        """The entries this server stores. An entry of a type it does not hold (a Location, an
        Encounter) stays where its absolute fullUrl says it lives, and the references to it name
        that URL; one with only a `urn:` fullUrl could not be found again: 422."""
        elsewhere = {
            i: e["fullUrl"]
            for i, e in enumerate(entries)
            if e["resource"]["resourceType"] not in SERVED_TYPES
        }
        issues = [
            Issue(
                "not-supported",
                f"Bundle.entry[{i}]: a {entries[i]['resource']['resourceType']} is not stored "
                "here; give it its absolute fullUrl on the server that holds it",
                f"Bundle.entry[{i}].fullUrl",
            )
            for i, url in elsewhere.items()
            if not url.startswith(("http://", "https://"))
            and any(t == i for t in resolved.targets.values())
        ]
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return [
            {**e, "resource": rewrite_entry_references(e["resource"], i, resolved, elsewhere)}
            for i, e in enumerate(entries)
            if i not in elsewhere
        ]

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


def _logical(
    reference: Any, entries: list[dict[str, Any]], resolved: BundleReferences
) -> dict[str, Any]:
    """A logical reference (identifier) to the resource the Claim's reference names."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    target = resolved.target(0, ref) if isinstance(ref, str) else None
    resource = entries[target]["resource"] if target is not None else {}
    identifier = (resource.get("identifier") or [None])[0]
    if isinstance(identifier, dict) and identifier.get("value"):
        return {"identifier": {k: identifier[k] for k in ("system", "value") if k in identifier}}
    return {"display": "the member named in the PAS request"}
