"""The second-opinion workflow: intake of a request, the network check, the decision as a
ClaimResponse, pended requests and deadlines (contract §3-§5).

Intake runs inside the submitting transaction (a bad request stores nothing); evaluation runs after
it commits, and again from the background worker for pended requests, so nothing accepted is lost
when the directory is down or the process restarts.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from fhir_adapter import telemetry
from fhir_adapter.codes import (
    DEFAULT_PRIMARY_CARE_TAXONOMY,
    NPI,
    NUCC,
    STATUS_SYSTEM,
    TASK_CODE_SYSTEM,
    BusinessStatus,
    DenialReason,
)
from fhir_adapter.errors import (
    DirectoryUnavailableError,
    InvalidTransitionError,
    NotFoundError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir.dates import format_instant, period_range
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.fhir.search import identifier_condition
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.notices import (
    DEFAULT_RIGHTS_CONTACTS,
    PlanContact,
    RightsContacts,
    render,
)
from fhir_adapter.policy.decision import Decision, Outcome, RuleStep
from fhir_adapter.policy.engine import evaluate
from fhir_adapter.policy.facts import Care, Provider, RequestFacts
from fhir_adapter.ports.directory import Directory
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import OutboxItem, ResourceStore, StoredResource, StoreTransaction
from fhir_adapter.services.resources import Clock, ResourceService, with_meta
from fhir_adapter.services.subscriptions import SubscriptionService
from fhir_adapter.workflow import pas, pas_changes
from fhir_adapter.workflow.deadlines import (
    due_at,
    flag_for_review,
    is_flagged,
    past_warning_share,
    track_for,
    warning_horizon,
)
from fhir_adapter.workflow.intake import (
    check_coverage,
    check_member,
    check_request,
    check_task,
    check_unmarked_request,
    initial_provider_reference,
    is_fulfillment_task,
    is_second_opinion_request,
    listed_reasons,
)
from fhir_adapter.workflow.letters import (
    letters_for,
    notice_communication,
    report_letter,
    translation_flags,
    with_letter,
)
from fhir_adapter.workflow.plan import (
    PayorVerdict,
    identifiers_of,
    payor_verdict,
    plan_references,
)
from fhir_adapter.workflow.provenance import change_provenance, decision_provenance
from fhir_adapter.workflow.reports import (
    CONSULT_NOTE,
    LOINC,
    check_report,
    check_report_subject,
    is_consultation_report,
    report_communication,
)
from fhir_adapter.workflow.requester import (
    address_position,
    preferred_language,
    related_person_patient,
    requester_kind,
    treating_references,
)
from fhir_adapter.workflow.review import ReviewerDecision
from fhir_adapter.workflow.states import UNDECIDED, TaskStatus, transition
from fhir_adapter.workflow.subscriptions import check_subscription

DEADLINE_BASIS = "42 CFR 438.404(c)(5): no decision within the time allowed is a denial that day"
REVIEWER_BASIS = "42 CFR 438.210(b)(3): decided by a reviewer with appropriate clinical expertise"

log = logging.getLogger(__name__)

_TASK_FOR_OUTCOME = {
    Outcome.APPROVED_IN_NETWORK: TaskStatus.ACCEPTED,
    Outcome.APPROVED_OUT_OF_NETWORK: TaskStatus.ACCEPTED,
    Outcome.DENIED: TaskStatus.REJECTED,
    Outcome.PENDING_REVIEW: TaskStatus.ON_HOLD,
    Outcome.PENDING_DIRECTORY: TaskStatus.ON_HOLD,
}


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    plan_organization: str
    primary_care_taxonomy: frozenset[str] = DEFAULT_PRIMARY_CARE_TAXONOMY
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 900.0
    lease_seconds: float = 120.0
    member_notice_url: str | None = None
    answer_within_seconds: float = 10.0
    subscription_allowed_hosts: frozenset[str] = frozenset()  # issue #16: http and private hosts
    plan_contact: PlanContact = field(
        default_factory=lambda: PlanContact("Health plan", "-", "711", (), "-", "-")
    )
    directory_url: str | None = None  # the plan is also named by its reference there
    candidates_offered: int = 5  # providers a decision offers the member, best-ranked first
    warn_at_share: float = 0.75  # a pended request past this share of its window is flagged
    rights_contacts: RightsContacts = DEFAULT_RIGHTS_CONTACTS
    taglines: Mapping[str, str] | None = None  # None: the built-in catalog


@dataclass(slots=True)
class _Request:
    """A stored request and the resources it references, read in one transaction."""

    task: StoredResource
    request: StoredResource
    patient: dict[str, Any] | None
    coverage: dict[str, Any] | None
    local: dict[str, dict[str, Any]] = field(default_factory=dict)  # other local resources by key
    payors: list[tuple[str, PayorVerdict]] = field(default_factory=list)  # (as named, verdict)
    plan_identifiers: frozenset[tuple[str | None, str]] = frozenset()
    treating: list[str] = field(default_factory=list)  # who the member's records say treats them


class WorkflowService:
    """Implements the WriteHooks of ResourceService for second-opinion requests."""

    def __init__(
        self,
        store: ResourceStore,
        resources: ResourceService,
        directory: Directory,
        *,
        config: WorkflowConfig,
        closed_days: Callable[[], set[date]],
        clock: Clock,
        subscriptions: SubscriptionService | None = None,
    ) -> None:
        self.store = store
        self.resources = resources
        self.directory = directory
        self.config = config
        self.closed_days = closed_days
        self.clock = clock
        self.subscriptions = subscriptions

    # -- WriteHooks ----------------------------------------------------------------------------

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        """Contract §3: resubmitting a request never creates a second one."""
        if is_second_opinion_request(content):
            for identifier in content.get("identifier") or []:
                if identifier.get("system") and identifier.get("value"):
                    return identifier_condition(str(identifier["system"]), str(identifier["value"]))
        if is_fulfillment_task(content):
            focus = reference_of(content.get("focus"))
            if focus and not focus.startswith("urn:") and "/" in focus:
                return f"focus={focus}&code={TASK_CODE_SYSTEM}|fulfill"
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        """Check new second-opinion requests (422 with every issue) and receive their Tasks."""
        issues: list[Issue] = []
        new_requests = {
            r.resource.key: r
            for r in results
            if r.created and is_second_opinion_request(r.resource.content)
        }
        for result in new_requests.values():
            issues += check_request(result.resource.content, result.path)
            issues += await self._check_member_and_coverage(tx, result, results)
        for result in results:
            if result.created and result.resource.resource_type == "ServiceRequest":
                issues += check_unmarked_request(result.resource.content, result.path)
        received: dict[int, WriteResult] = {}
        for index, result in enumerate(results):
            content = result.resource.content
            if not result.created or content.get("resourceType") != "Task":
                continue
            focus = _local_key(reference_of(content.get("focus")), self.resources.base_url)
            request = new_requests.get(focus or "")
            request_content = request.resource.content if request else None
            if request_content is None and focus and focus.startswith("ServiceRequest/"):
                stored = await tx.resources.read(*focus.split("/", 1))
                request_content = stored.content if stored else None
            if request_content is None or not is_second_opinion_request(request_content):
                if new_requests and is_fulfillment_task(content):
                    # a Task sent with a request must be that request's Task
                    issues += check_task(content, None, result.path)
                continue
            task_issues = check_task(content, request_content, result.path)
            issues += task_issues
            if not task_issues and not issues:
                received[index] = await self._receive(tx, result, request_content)
        issues += await self._accept_reports(tx, results)
        for result in results:
            if result.resource.resource_type == "Subscription":
                subscription = result.resource.content
                issues += check_subscription(
                    subscription, result.path, self.config.subscription_allowed_hosts
                )
                if result.created and subscription.get("status") != "requested":
                    where = f"{result.path}.status"
                    issues.append(
                        Issue(
                            "value",
                            f"{where}: a new Subscription is 'requested'; the handshake makes it active",
                            where,
                        )
                    )
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return [received.get(i, r) for i, r in enumerate(results)]

    async def _check_member_and_coverage(
        self, tx: StoreTransaction, request: WriteResult, results: list[WriteResult]
    ) -> list[Issue]:
        """The Patient and Coverage a new request names, sent along or stored before, must carry
        what the decision needs (contract §3): a 422 the EHR can fix, not a denial for a gap."""
        written = {r.resource.key: r for r in results}
        content = request.resource.content
        wanted = [
            ("subject", reference_of(content.get("subject")), check_member),
            ("insurance[0]", reference_of((content.get("insurance") or [{}])[0]), check_coverage),
        ]
        issues: list[Issue] = []
        for element, reference, check in wanted:
            key = _local_key(reference, self.resources.base_url)
            if not key or "/" not in key:
                continue  # check_request or the reference check names this one
            if key in written:  # in this request: name its own elements
                where = written[key].path
                issues += check(written[key].resource.content, where, where)
                continue
            stored = await tx.resources.read(*key.split("/", 1))
            if stored is not None:  # stored before: the request's reference to it is at fault
                where = f"{request.path}.{element}"
                issues += [
                    replace(issue, expression=where)
                    for issue in check(stored.content, where, f"{where} ({key})")
                ]
        return issues

    async def _accept_reports(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[Issue]:
        """Policy VI, contract §4.6: a Consultation Report for an approved request completes its Task
        and goes to the PCP and the member, through the outbox, in this same transaction."""
        issues: list[Issue] = []
        written = {r.resource.key: r.resource for r in results}
        proposals = [
            r.resource.key
            for r in results
            if r.created
            and r.resource.resource_type == "ServiceRequest"
            and r.resource.content.get("intent") == "proposal"
        ]
        for result in results:
            report = result.resource.content
            if not (result.created and is_consultation_report(report)):
                continue
            request_key = next(
                (
                    key
                    for key in (
                        _local_key(reference_of(b), self.resources.base_url)
                        for b in report["basedOn"]
                    )
                    if key and key.startswith("ServiceRequest/")
                ),
                None,
            )
            request = written.get(request_key or "") or (
                await tx.resources.read(*request_key.split("/", 1)) if request_key else None
            )
            if request is None or not is_second_opinion_request(request.content):
                continue  # a DiagnosticReport about something else
            report_issues = check_report(report, result.path)
            report_issues += check_report_subject(
                _local_key(reference_of(report.get("subject")), self.resources.base_url),
                _local_key(reference_of(request.content.get("subject")), self.resources.base_url),
                result.path,
            )
            task = await self.resources.find_conditional(
                tx, "Task", f"focus={request.key}&code={TASK_CODE_SYSTEM}|fulfill", lock=False
            )
            where = f"{result.path}.basedOn"
            if task is None:
                report_issues.append(
                    Issue(
                        "business-rule", f"{where}: {request.key} has no second-opinion Task", where
                    )
                )
            elif task.content.get("status") != TaskStatus.ACCEPTED:
                state = _business_status(task.content) or task.content.get("status")
                report_issues.append(
                    Issue(
                        "business-rule",
                        f"{where}: the request is {state}; a Consultation Report is accepted only for an approved request",
                        where,
                    )
                )
            issues += report_issues
            if not report_issues and task is not None:
                await self._complete(tx, task, request, result.resource, proposals)
        return issues

    async def _send(
        self,
        tx: StoreTransaction,
        communication: dict[str, Any],
        destination: str | None,
        now: datetime,
    ) -> None:
        """Store a Communication and, when it must travel, owe its delivery in the same transaction."""
        stored = await self._write(tx, communication, None)
        if destination is not None:
            await tx.outbox.add(
                OutboxItem(
                    id=str(uuid.uuid4()),
                    communication_id=stored.id,
                    destination=destination,
                    state="pending",
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                )
            )

    async def _complete(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        request: StoredResource,
        report: StoredResource,
        proposals: list[str],
    ) -> None:
        now = self.clock()
        completed = transition(
            task.content, TaskStatus.COMPLETED, business_status=BusinessStatus.COMPLETED, now=now
        )
        completed["output"] = [
            *completed.get("output", []),
            {
                "type": {
                    "coding": [{"system": LOINC, "code": CONSULT_NOTE, "display": "Consult note"}]
                },
                "valueReference": {"reference": report.key},
            },
        ]
        completed.pop("meta", None)
        stored = await tx.resources.replace(
            task, self.resources_meta(completed, task, now), now=now
        )
        await self._record_provenance(
            tx,
            change_provenance(
                target=f"{stored.key}/_history/{stored.version_id}",
                recorded=now,
                activity="second-opinion completed by its consultation report",
                plan=self.config.plan_organization,
                source=report.key,
            ),
            now,
        )
        patient_key = (
            _local_key(reference_of(request.content.get("subject")), self.resources.base_url) or ""
        )
        patient = await tx.resources.read(*patient_key.split("/", 1)) if patient_key else None
        pcp = next(
            (
                key
                for key in (
                    _local_key(reference_of(p), self.resources.base_url)
                    for p in (patient.content if patient else {}).get("generalPractitioner") or []
                )
                if key
            ),
            None,
        )
        sender = _local_key(
            reference_of((report.content.get("performer") or [{}])[0]), self.resources.base_url
        )
        # (recipient, outbox destination); no destination: the copy is read through the API
        recipients: list[tuple[str, str | None]] = [(pcp, "provider-endpoint")] if pcp else []
        recipients.append(
            (patient_key, "member-notice-url" if self.config.member_notice_url else None)
        )
        for recipient, destination in recipients:
            if recipient is None:
                continue
            communication = report_communication(
                communication_id=str(uuid.uuid4()),
                report_key=report.key,
                request_key=request.key,
                patient_key=patient_key,
                recipient=recipient,
                sender=sender,
                proposals=proposals,
                delivered_now=destination is None,
                now=now,
            )
            if recipient == patient_key:  # the member's copy is a letter they can read
                context = report_letter(
                    report.content,
                    request=request.content,
                    request_key=request.key,
                    patient=patient.content if patient else None,
                    plan=self.config.plan_contact,
                    now=now,
                    rights=self.config.rights_contacts,
                    taglines=self.config.taglines,
                )
                communication = with_letter(communication, render(context), context)
            await self._send(tx, communication, destination, now)
        log.info("Task/%s completed with %s", task.id, report.key)

    async def after_commit(self, results: list[WriteResult]) -> None:
        """Decide newly received requests right away; the worker retries whatever this leaves.
        New Subscriptions get their handshake."""
        for result in results:
            content = result.resource.content
            if (
                result.created
                and content.get("resourceType") == "Subscription"
                and self.subscriptions
            ):
                try:
                    await self.subscriptions.handshake(result.resource.id)
                except Exception as exc:  # it stays 'requested'; the client can see and retry
                    log.warning(
                        "handshake of Subscription/%s failed (%s)",
                        result.resource.id,
                        type(exc).__name__,
                    )
            if is_fulfillment_task(content) and content.get("status") == TaskStatus.RECEIVED:
                try:
                    # PAS spec-7: answer within about 15 s; a slow directory leaves it to the worker.
                    await asyncio.wait_for(
                        self.evaluate(result.resource.id), timeout=self.config.answer_within_seconds
                    )
                except Exception as exc:  # the request is stored and its job will be retried
                    log.warning(
                        "evaluation of Task/%s failed (%s); the worker will retry",
                        result.resource.id,
                        type(exc).__name__,
                    )

    # -- intake --------------------------------------------------------------------------------

    async def _receive(
        self, tx: StoreTransaction, result: WriteResult, request: dict[str, Any]
    ) -> WriteResult:
        """Contract §4.1: the Task is received, the clock starts, the due date is set."""
        now = self.clock()
        track = track_for(request.get("priority"), listed_reasons(request))
        due = due_at(now, track, self.closed_days())
        task = transition(
            result.resource.content,
            TaskStatus.RECEIVED,
            business_status=BusinessStatus.RECEIVED,
            now=now,
        )
        task["restriction"] = {
            **(task.get("restriction") or {}),
            "period": {"start": format_instant(now), "end": format_instant(due)},
        }
        task["owner"] = {"reference": self.config.plan_organization}
        task.pop("meta", None)
        current = result.resource  # created in this very transaction: nobody else can see it
        stored = await tx.resources.replace(
            current, self.resources_meta(task, current, now), now=now
        )
        await tx.jobs.add(stored.id, due_at=due, now=now)
        log.info("received Task/%s (%s track, due %s)", stored.id, track.value, format_instant(due))
        return WriteResult(stored, created=True, path=result.path)

    @staticmethod
    def resources_meta(
        content: dict[str, Any], current: StoredResource, now: datetime
    ) -> dict[str, Any]:
        return with_meta(content, current.id, current.version_id + 1, now)

    # -- evaluation ----------------------------------------------------------------------------

    async def evaluate(self, task_id: str) -> Decision | None:
        """Gather the facts (directory I/O outside any transaction), apply the policy, record it."""
        loaded = await self._load(task_id)
        if loaded is None:
            return None
        facts = await self._facts(loaded)
        decision = evaluate(facts)
        await self._record(loaded, decision, facts)
        return decision

    async def candidates(self, task_id: str) -> tuple[tuple[Provider, ...], tuple[Provider, ...]]:
        """The directory's qualified providers for a request (in network, out of network), for
        the review workspace's decision form: the same facts the rules decided on."""
        loaded = await self._load(task_id)
        if loaded is None:
            return (), ()
        facts = await self._facts(loaded)
        return facts.in_network, facts.out_of_network

    async def _load(self, task_id: str) -> _Request | None:
        """The Task, its request and everything the request names, in a few batched reads."""
        base = self.resources.base_url
        async with self.store.transaction(write=False) as tx:
            task = await tx.resources.read("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return None
            focus = _local_key(reference_of(task.content.get("focus")), base)
            request = await tx.resources.read(*focus.split("/", 1)) if focus else None
            if request is None:
                return None
            content = request.content
            first = [
                reference_of(content.get("subject")),
                reference_of((content.get("insurance") or [{}])[0]),
                reference_of(content.get("requester")),
                initial_provider_reference(content),
                *(reference_of(p) for p in content.get("performer") or []),
                *(reference_of(r) for r in content.get("reasonReference") or []),
                self.config.plan_organization,
            ]
            found = await _read_keys(tx, first, base)
            patient = found.get(_local_key(first[0], base) or "")
            coverage = found.get(_local_key(first[1], base) or "")
            pcp_refs = [reference_of(p) for p in (patient or {}).get("generalPractitioner") or []]
            settled = (
                first[2] in (first[3], *pcp_refs) or requester_kind(first[2]) != "professional"
            )
            care_teams = [] if settled else await self._care_teams(tx, _local_key(first[0], base))
            conditions = [
                found[key]
                for key in (
                    _local_key(reference_of(r), base) for r in content.get("reasonReference") or []
                )
                if key in found and found[key].get("resourceType") == "Condition"
            ]
            treating = treating_references(care_teams, conditions)
            second = [*pcp_refs, *(reference_of(p) for p in (coverage or {}).get("payor") or [])]
            second += treating
            found |= await _read_keys(
                tx, [r for r in second if _local_key(r, base) not in found], base
            )
            practitioners = [
                reference_of(r.get("practitioner"))
                for r in found.values()
                if r.get("resourceType") == "PractitionerRole"
            ]
            found |= await _read_keys(
                tx, [r for r in practitioners if _local_key(r, base) not in found], base
            )
        loaded = _Request(task, request, patient, coverage, found)
        loaded.plan_identifiers = identifiers_of(found.get(self.config.plan_organization))
        loaded.payors = self._payors(loaded.plan_identifiers, coverage, found)
        loaded.treating = treating
        return loaded

    async def _care_teams(
        self, tx: StoreTransaction, patient_key: str | None
    ) -> list[dict[str, Any]]:
        """The member's care teams, as stored (evidence of who treats the member)."""
        if not patient_key:
            return []
        query = self.resources.parse_query("CareTeam", [("subject", patient_key), ("_count", "50")])
        page = await tx.resources.search(query)
        return [m.content for m in page.matches]

    def _payors(
        self,
        plan_ids: frozenset[tuple[str | None, str]],
        coverage: dict[str, Any] | None,
        local: dict[str, dict[str, Any]],
    ) -> list[tuple[str, PayorVerdict]]:
        """Each Coverage.payor and whether it names the plan, in any of the four forms, with no
        directory call (contract §4.2; issue #10)."""
        base = self.resources.base_url
        anchors = {
            f"#{c.get('id')}": c for c in (coverage or {}).get("contained") or [] if c.get("id")
        }
        names = plan_references(
            self.config.plan_organization, base_url=base, directory_url=self.config.directory_url
        )
        payors = []
        for payor in (coverage or {}).get("payor") or []:
            verdict = payor_verdict(
                payor,
                plan_names=names,
                plan_identifiers=plan_ids,
                resolve=lambda ref: anchors.get(ref) or local.get(_local_key(ref, base) or ""),
                directory_url=self.config.directory_url,
            )
            named = _normalize(reference_of(payor), base) or "Coverage.payor.identifier"
            payors.append((named, verdict))
        return payors

    async def _payors_asked(self, loaded: _Request) -> tuple[str, ...]:
        """Coverage.payor as the rules see them (the plan's reference for each naming the plan);
        the directory settles the ones only it knows (raises DirectoryUnavailableError)."""
        named = []
        for reference, verdict in loaded.payors:
            if verdict == "ask-directory":
                listed = await self.directory.read(reference)
                verdict = "plan" if identifiers_of(listed) & loaded.plan_identifiers else "other"
            named.append(self.config.plan_organization if verdict == "plan" else reference)
        return tuple(named)

    async def _facts(self, loaded: _Request) -> RequestFacts:
        now = self.clock()
        request = loaded.request.content
        coverage = loaded.coverage or {}
        span = period_range(coverage.get("period") or {}) if coverage.get("period") else None
        requester_ref = reference_of(request.get("requester"))
        kind = requester_kind(requester_ref)
        pcp_refs = [
            reference_of(p) for p in (loaded.patient or {}).get("generalPractitioner") or []
        ]
        initial_ref = initial_provider_reference(request)
        selected_refs = [reference_of(p) for p in request.get("performer") or []]
        base: dict[str, Any] = {
            "now": now,
            "plan_reference": self.config.plan_organization,
            "coverage_status": coverage.get("status"),
            "coverage_start": span[0] if span else None,
            "coverage_end": span[1] if span else None,
            "requester_kind": kind,
            "requester_is_the_member": kind == "member"
            and requester_ref == reference_of(request.get("subject")),
            "requester_represents_member": kind == "representative"
            and self._represents_member(requester_ref, loaded),
            "reasons": listed_reasons(request),
            "primary_care_taxonomy": self.config.primary_care_taxonomy,
            "candidates_offered": self.config.candidates_offered,
            "member_language": preferred_language(loaded.patient),
            "member_position": address_position(loaded.patient),
        }
        try:  # only a payor named by another of the directory's Organizations needs it
            base["coverage_payors"] = await self._payors_asked(loaded)
        except DirectoryUnavailableError:
            base["coverage_payors"] = tuple(
                self.config.plan_organization if verdict == "plan" else reference
                for reference, verdict in loaded.payors
            )
            base["payor_unsettled"] = any(v == "ask-directory" for _, v in loaded.payors)
        # Who asked is settled from the request itself (references, NPIs), so that a directory
        # outage never turns into a wrong answer about eligibility.
        requester_npi = self._local_npi(requester_ref, loaded)
        pcp_npis = {self._local_npi(r, loaded) for r in pcp_refs} - {None}
        initial_npi = self._local_npi(initial_ref, loaded)
        is_pcp = kind == "professional" and (
            any(_same_reference(requester_ref, r) for r in pcp_refs)
            or (requester_npi is not None and requester_npi in pcp_npis)
        )
        is_initial = kind == "professional" and (
            _same_reference(requester_ref, initial_ref)
            or (requester_npi is not None and requester_npi == initial_npi)
        )
        requester_key = _normalize(requester_ref, self.resources.base_url)
        base["requester_is_treating"] = kind == "professional" and any(
            _same_reference(requester_key, _normalize(r, self.resources.base_url))
            or (requester_npi is not None and requester_npi == self._local_npi(r, loaded))
            for r in loaded.treating
        )
        try:
            requester = (
                await self._provider(requester_ref, loaded) if kind == "professional" else None
            )
            initial = await self._provider(initial_ref, loaded)
            pcp = await self._provider(pcp_refs[0] if pcp_refs else None, loaded)
            selected = await self._provider(selected_refs[0] if selected_refs else None, loaded)
            care, needed = self._care(request, initial)
            codes = {needed} if needed else set(self.config.primary_care_taxonomy)
            in_network: list[Provider] = []
            out_of_network: list[Provider] = []
            if care is not None and (needed or care is Care.PRIMARY):
                in_network, out_of_network = await self._candidates(
                    codes, group=pcp.organization_reference if pcp else None, initial=initial
                )
        except DirectoryUnavailableError:
            return RequestFacts(
                **base,
                requester_is_pcp=is_pcp,
                requester_is_initial_provider=is_initial,
                care=None,
                needed_specialty=None,
                directory_available=False,
            )
        return RequestFacts(
            **base,
            requester_is_pcp=is_pcp
            or (requester is not None and requester.is_same_professional(pcp)),
            requester_is_initial_provider=is_initial
            or (requester is not None and requester.is_same_professional(initial)),
            care=care,
            needed_specialty=needed,
            requester=requester,
            initial_provider=initial,
            selected_provider=selected,
            pcp_organization=pcp.organization_reference if pcp else None,
            in_network=tuple(in_network),
            out_of_network=tuple(out_of_network),
        )

    async def _candidates(
        self, codes: set[str], *, group: str | None, initial: Provider | None
    ) -> tuple[list[Provider], list[Provider]]:
        """Narrow directory searches that stop once there are enough to rank (issue #10): the
        PCP's medical group first, then the whole network; out of network only if nobody in it
        can give the opinion (policy IV)."""
        now = self.clock()
        enough = 4 * max(self.config.candidates_offered, 1) + 1  # +1: the initial provider
        found: list[Provider] = []
        if group:
            found = await self.directory.in_network_providers(
                codes, today=now, organization=group, enough=enough
            )
        seen = {p.role_reference for p in found}
        found += [
            p
            for p in await self.directory.in_network_providers(codes, today=now, enough=enough)
            if p.role_reference not in seen
        ]
        if any(p.in_network and not p.is_same_professional(initial) for p in found):
            return found, []
        everyone = await self.directory.providers_with_specialty(
            codes, today=now, enough=enough, out_of_network=True
        )
        return found, [p for p in everyone if not p.in_network]

    def _represents_member(self, reference: str | None, loaded: _Request) -> bool:
        """An authorized representative: an active RelatedPerson (in the request, contained, or
        stored) whose `patient` is the member the request is for."""
        request = loaded.request.content
        if reference and reference.startswith("#"):
            related = next(
                (c for c in request.get("contained") or [] if f"#{c.get('id')}" == reference),
                None,
            )
        else:
            related = loaded.local.get(_local_key(reference, self.resources.base_url) or "")
        patient = related_person_patient(related)
        subject = reference_of(request.get("subject"))
        base = self.resources.base_url
        return bool(patient and _normalize(patient, base) == _normalize(subject, base))

    def _local_npi(self, reference: str | None, loaded: _Request) -> str | None:
        """The NPI of a locally stored Practitioner or PractitionerRole's practitioner."""
        key = _local_key(reference, self.resources.base_url)
        resource = loaded.local.get(key or "")
        if resource is None:
            return None
        if resource.get("resourceType") == "PractitionerRole":
            practitioner_key = _local_key(
                reference_of(resource.get("practitioner")), self.resources.base_url
            )
            resource = loaded.local.get(practitioner_key or "") or {}
        return next(
            (i.get("value") for i in resource.get("identifier") or [] if i.get("system") == NPI),
            None,
        )

    def _care(
        self, request: dict[str, Any], initial: Provider | None
    ) -> tuple[Care | None, str | None]:
        """Policy III: PCP care or specialist care, and the specialty the second opinion needs."""
        wanted = [
            c["code"]
            for c in (request.get("performerType") or {}).get("coding") or []
            if c.get("system") in (None, NUCC) and c.get("code")
        ]
        specialties = initial.specialties if initial else frozenset()
        if specialties & self.config.primary_care_taxonomy:
            return Care.PRIMARY, wanted[0] if wanted else None
        if specialties:
            return Care.SPECIALIST, wanted[0] if wanted else sorted(specialties)[0]
        if wanted:
            care = (
                Care.PRIMARY if wanted[0] in self.config.primary_care_taxonomy else Care.SPECIALIST
            )
            return care, wanted[0]
        return None, None

    async def _provider(self, reference: str | None, loaded: _Request) -> Provider | None:
        """The directory's view of a provider the request names (local copy or directory URL)."""
        if not reference:
            return None
        now = self.clock()
        key = _local_key(reference, self.resources.base_url)
        if key is None:  # an absolute reference: ask the directory for it
            return await self.directory.provider(reference, today=now)
        local = loaded.local.get(key)
        if local is None:
            return None
        role_specialties = frozenset(
            c["code"]
            for s in local.get("specialty") or []
            for c in s.get("coding") or []
            if c.get("system") == NUCC and c.get("code")
        )
        practitioner = (
            local
            if local.get("resourceType") == "Practitioner"
            else loaded.local.get(
                _local_key(reference_of(local.get("practitioner")), self.resources.base_url) or ""
            )
        )
        npi = next(
            (
                i.get("value")
                for i in (practitioner or {}).get("identifier") or []
                if i.get("system") == NPI
            ),
            None,
        )
        if npi:
            roles = await self.directory.roles_by_npi(npi, today=now)
            matching = [
                r for r in roles if not role_specialties or r.specialties & role_specialties
            ]
            chosen = next((r for r in matching if r.in_network), None) or (
                matching[0] if matching else None
            )
            if chosen is not None:
                return chosen
        # Not in the directory: known only by what the request says; never in network.
        return Provider(role_reference=key, specialties=role_specialties, npi=npi, in_network=False)

    # -- recording the decision ----------------------------------------------------------------

    async def _record(self, loaded: _Request, decision: Decision, facts: RequestFacts) -> None:
        now = self.clock()
        task_id = loaded.task.id
        async with self.store.transaction() as tx:
            task = await tx.resources.read_for_update("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return  # decided meanwhile (another worker, a reviewer, the deadline sweep)
            await self._write_decision(tx, task, loaded.request, decision, now)
            if decision.outcome is Outcome.PENDING_DIRECTORY:
                job = await tx.jobs.get(task_id)
                attempts = job.attempts if job else 1
                delay = min(
                    self.config.retry_base_seconds * 2 ** max(attempts - 1, 0),
                    self.config.retry_max_seconds,
                )
                await tx.jobs.set(
                    task_id, state="evaluate", next_attempt_at=now + timedelta(seconds=delay)
                )
            elif decision.outcome is Outcome.PENDING_REVIEW:
                await tx.jobs.set(task_id, state="review")
            else:
                await tx.jobs.set(task_id, state="done")
        log.info(
            "decided Task/%s: %s (%s)",
            task_id,
            decision.outcome.value,
            decision.deciding_rule.rule if decision.deciding_rule else "-",
        )

    async def decide_by_reviewer(self, task_id: str, review: ReviewerDecision) -> StoredResource:
        """`Task/{id}/$decide`: a reviewer decides a pended (or not yet decided) request."""
        now = self.clock()
        async with self.store.transaction() as tx:
            task = await tx.resources.read_for_update("Task", task_id)
            if task is None or not is_fulfillment_task(task.content):
                raise NotFoundError(f"Task/{task_id} is not a second-opinion request")
            if task.content.get("status") not in UNDECIDED:
                raise InvalidTransitionError(
                    f"Task/{task_id} is {task.content.get('status')}; only an undecided request can be decided",
                    expression="Task.status",
                )
            focus = _local_key(reference_of(task.content.get("focus")), self.resources.base_url)
            request = await tx.resources.read(*focus.split("/", 1)) if focus else None
            if request is None:
                raise NotFoundError(f"The request of Task/{task_id} is missing")
            decision = Decision(
                review.outcome,
                providers=tuple(Provider(role_reference=ref) for ref in review.providers),
                denial_reason=DenialReason.REVIEWER_DENIED
                if review.outcome is Outcome.DENIED
                else None,
                trail=(RuleStep("reviewer_decision", REVIEWER_BASIS, review.outcome.value),),
            )
            reviewer = pas.reviewer_extension(
                review.reviewer,
                review.reviewer_npi,
                review.reviewer_specialty,
                display=review.reviewer_display,
            )
            await self._write_decision(
                tx,
                task,
                request,
                decision,
                now,
                reviewer=reviewer,
                note=review.reason,
                authorized_until=review.authorized_until,
            )
            await tx.jobs.set(task_id, state="done")
            response = await self._find_by_trace(tx, "ClaimResponse", task_id)
        assert response is not None
        log.info("Task/%s decided by a reviewer: %s", task_id, review.outcome.value)
        return response

    # -- PAS changes: cancellation and updates (issue #12) -------------------------------------

    async def cancel(self, task_id: str, *, reason: str) -> StoredResource:
        """PAS cancel (certificationType 3): the Task cancelled, a new ClaimResponse version
        saying so, the notices not yet sent withdrawn, subscribers notified; one transaction.
        A request already finished (denied, completed, cancelled) is 409 with the reason."""
        now = self.clock()
        async with self.store.transaction() as tx:
            task = await self._locked_request_task(tx, task_id)
            status = task.content.get("status")
            if status in ("rejected", "completed", "cancelled", "failed", "entered-in-error"):
                raise InvalidTransitionError(
                    f"Task/{task_id} is {status}: a finished request cannot be cancelled "
                    "(PAS: a denied request is not changed; submit a new request instead)",
                    expression="Task.status",
                )
            moved = transition(
                task.content,
                TaskStatus.CANCELLED,
                business_status=BusinessStatus.CANCELLED,
                now=now,
                status_reason=f"Cancelled by its submitter: {reason}",
            )
            moved.pop("meta", None)
            stored_task = await tx.resources.replace(
                task, self.resources_meta(moved, task, now), now=now
            )
            await tx.jobs.set(task_id, state="done")
            existing = await self._find_by_trace(tx, "ClaimResponse", task_id)
            response = existing
            if existing is not None:
                body = pas_changes.cancelled_claim_response(
                    existing.content, now=now, reason=reason
                )
                response = await self._write(tx, body, existing)
                focus = _local_key(reference_of(task.content.get("focus")), self.resources.base_url)
                withdrawn = await self._withdraw_notices(tx, focus or "", now)
                patient = reference_of(existing.content.get("patient"))
                request = await tx.resources.read(*focus.split("/", 1)) if focus else None
                requester = reference_of((request.content if request else {}).get("requester"))
                await self._record_provenance(
                    tx,
                    decision_provenance(
                        targets=[
                            f"{response.key}/_history/{response.version_id}",
                            f"{stored_task.key}/_history/{stored_task.version_id}",
                        ],
                        request=focus or task.key,
                        plan=self.config.plan_organization,
                        recorded=now,
                        created=False,
                        reviewer=None,
                    ),
                    now,
                )
                await self._notify(tx, response, patient, requester, now)
                log.info("Task/%s cancelled; %d notice(s) withdrawn", task_id, withdrawn)
        return response or stored_task

    async def pend_unanswered(self, task_id: str) -> None:
        """PAS spec-7/8: a request whose evaluation did not finish within the answer time (a
        slow directory) is answered pended (A4) at once; the worker decides it, and the final
        ClaimResponse, under the same identifiers, comes through the subscription and $inquire."""
        now = self.clock()
        async with self.store.transaction() as tx:
            task = await tx.resources.read_for_update("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return  # decided meanwhile
            if await self._find_by_trace(tx, "ClaimResponse", task_id) is not None:
                return
            focus = _local_key(reference_of(task.content.get("focus")), self.resources.base_url)
            request = await tx.resources.read(*focus.split("/", 1)) if focus else None
            if request is None:
                return
            decision = Decision(
                Outcome.PENDING_DIRECTORY,
                trail=(
                    RuleStep(
                        "answer_time",
                        "PAS spec-7: the provider directory did not answer within the time a "
                        "PAS answer allows; pended, decided when it does",
                        Outcome.PENDING_DIRECTORY.value,
                    ),
                ),
            )
            await self._write_decision(tx, task, request, decision, now)
            await tx.jobs.set(task_id, state="evaluate", next_attempt_at=now)
        log.info("Task/%s pended: not decided within the PAS answer time", task_id)

    @staticmethod
    async def _locked_request_task(tx: StoreTransaction, task_id: str) -> StoredResource:
        """A second-opinion request's Task, held for update; 404 for anything else."""
        task = await tx.resources.read_for_update("Task", task_id)
        if task is None or not is_fulfillment_task(task.content):
            raise NotFoundError(f"Task/{task_id} is not a second-opinion request")
        return task

    async def _withdraw_notices(self, tx: StoreTransaction, request_key: str, now: datetime) -> int:
        """Notices about this request still waiting for delivery: their outbox items
        withdrawn, the Communications `not-done` with the reason (never `entered-in-error`:
        they were right when written, they are just no longer to be sent)."""
        query = self.resources.parse_query(
            "Communication",
            [("based-on", request_key), ("status", "in-progress"), ("_count", "50")],
        )
        page = await tx.resources.search(query)
        ids = await tx.outbox.withdraw([m.id for m in page.matches], now=now)
        for match in page.matches:
            if match.id not in ids:
                continue
            current = await tx.resources.read_for_update("Communication", match.id)
            if current is None:
                continue
            updated = {
                **current.content,
                "status": "not-done",
                "statusReason": {
                    "text": "withdrawn: the request was cancelled before this notice was sent"
                },
            }
            updated.pop("meta", None)
            await tx.resources.replace(current, self.resources_meta(updated, current, now), now=now)
        return len(ids)

    async def amend(self, task_id: str, *, note: str) -> StoredResource:
        """PAS update of a pended request: the Task's next version records it (one history), and
        the request is evaluated again at once (the worker retries what this leaves)."""
        now = self.clock()
        async with self.store.transaction() as tx:
            task = await self._locked_request_task(tx, task_id)
            if task.content.get("status") not in UNDECIDED:
                status = task.content.get("status")
                raise InvalidTransitionError(
                    f"Task/{task_id} is {status}: only a pended request is updated; PAS: "
                    "submit a new request",
                    expression="Task.status",
                )
            updated = dict(task.content)
            updated["lastModified"] = format_instant(now)
            updated["note"] = [
                *(updated.get("note") or []),
                {"time": format_instant(now), "text": note},
            ]
            updated.pop("meta", None)
            stored = await tx.resources.replace(
                task, self.resources_meta(updated, task, now), now=now
            )
            await tx.jobs.set(task_id, state="evaluate", next_attempt_at=now)
        try:
            await asyncio.wait_for(
                self.evaluate(task_id), timeout=self.config.answer_within_seconds
            )
        except Exception as exc:  # stored; the worker evaluates it again
            log.warning("re-evaluation of Task/%s failed (%s)", task_id, type(exc).__name__)
        return stored

    async def _write_decision(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        request: StoredResource,
        decision: Decision,
        now: datetime,
        *,
        reviewer: dict[str, Any] | None = None,
        note: str | None = None,
        authorized_until: datetime | None = None,
    ) -> StoredResource:
        """Claim (once), ClaimResponse (created or updated), and the Task moved to match."""
        content = request.content
        patient = reference_of(content.get("subject")) or ""
        requester = reference_of(content.get("requester"))
        # Claim.provider and ClaimResponse.requestor name professionals and organizations only
        professional = requester if requester_kind(requester) == "professional" else None
        provider = professional
        provider = provider or initial_provider_reference(content) or self.config.plan_organization
        expedited = track_for(content.get("priority"), listed_reasons(content)).value == "expedited"
        # Both look-ups first, so that no search has to wait for this transaction's own writes.
        existing = await self._find_by_trace(tx, "ClaimResponse", task.id)
        claim = await self.resources.find_conditional(  # the Task row lock is held
            tx, "Claim", f"requested-service={request.key}", lock=False
        )
        if claim is None:
            claim_body = pas.build_claim(
                task_id=task.id,
                request_key=request.key,
                patient=patient,
                coverage=reference_of((content.get("insurance") or [{}])[0]) or "",
                provider=provider,
                insurer=self.config.plan_organization,
                expedited=expedited,
                now=now,
            )
            claim = await self._write(tx, claim_body, None)
        response_body = pas.build_claim_response(
            decision,
            task_id=task.id,
            claim_key=claim.key,
            patient=patient,
            insurer=self.config.plan_organization,
            requestor=professional,
            now=now,
            reviewer=reviewer,
            note=note,
            authorized_until=authorized_until,
        )
        claim_response = await self._write(tx, response_body, existing)
        status = _TASK_FOR_OUTCOME[decision.outcome]
        unchanged = (
            task.content.get("status") == status.value
            and _business_status(task.content) == decision.outcome.business_status.value
        )
        targets = [f"{claim_response.key}/_history/{claim_response.version_id}"]
        if not unchanged:
            targets.append(f"{task.key}/_history/{task.version_id + 1}")
        await self._record_provenance(
            tx,
            decision_provenance(
                targets=targets,
                request=request.key,
                plan=self.config.plan_organization,
                recorded=now,
                created=existing is None,
                reviewer=_reviewer_reference(reviewer),
            ),
            now,
        )
        if unchanged:
            return task
        moved = transition(
            task.content,
            status,
            business_status=decision.outcome.business_status,
            now=now,
            status_reason=pas.disposition(decision) if decision.outcome is Outcome.DENIED else None,
        )
        moved["output"] = [
            o
            for o in moved.get("output") or []
            if reference_of(o.get("valueReference")) != claim_response.key
        ] + [
            {
                "type": {
                    "coding": [{"system": STATUS_SYSTEM, "code": "decision"}],
                    "text": "decision",
                },
                "valueReference": {"reference": claim_response.key},
            }
        ]
        moved.pop("meta", None)
        stored = await tx.resources.replace(task, self.resources_meta(moved, task, now), now=now)
        telemetry.decision_recorded(decision.outcome.value)  # issue #13: decisions by outcome
        await self._send_letters(tx, task.id, request, decision, claim_response, now, note)
        await self._notify(tx, claim_response, patient, requester, now)
        return stored

    async def _notify(
        self,
        tx: StoreTransaction,
        claim_response: StoredResource,
        patient: str | None,
        requester: str | None,
        now: datetime,
    ) -> None:
        """Subscribers of decisions (and of the PAS topic) hear of this ClaimResponse change."""
        if self.subscriptions is not None:
            await self.subscriptions.notify(
                tx,
                claim_response,
                patient=patient,
                org_identifiers=lambda: self._org_identifiers(tx, requester),
                now=now,
            )

    async def _org_identifiers(self, tx: StoreTransaction, requester: str | None) -> set[str]:
        """PAS `org-identifier`: the identifiers of the requesting organization (or of the
        requester's organization), the submitter a PAS subscriber filters on."""
        key = _local_key(requester, self.resources.base_url)
        found = await tx.resources.read(*key.split("/", 1)) if key else None
        values: set[str] = set()
        for resource in [found.content] if found else []:
            org_key = _local_key(
                reference_of(resource.get("organization")), self.resources.base_url
            )
            org = await tx.resources.read(*org_key.split("/", 1)) if org_key else None
            for holder in (resource, org.content if org else {}):
                values |= {
                    str(i["value"]) for i in holder.get("identifier") or [] if i.get("value")
                }
        return values

    async def _send_letters(
        self,
        tx: StoreTransaction,
        task_id: str,
        request: StoredResource,
        decision: Decision,
        claim_response: StoredResource,
        now: datetime,
        note: str | None,
    ) -> None:
        """Policy V, 42 CFR 438.404: the written notices, created with the decision they announce."""
        content = request.content
        patient_key = (
            _local_key(reference_of(content.get("subject")), self.resources.base_url) or ""
        )
        patient = await tx.resources.read(*patient_key.split("/", 1)) if patient_key else None
        requester = reference_of(content.get("requester"))
        professional = (  # a representative reads the member's notice; no provider endpoint
            _local_key(requester, self.resources.base_url)
            if requester_kind(requester) == "professional"
            else None
        )
        letters = letters_for(
            decision,
            task_id=task_id,
            request=content,
            request_key=request.key,
            patient=patient.content if patient else None,
            patient_key=patient_key,
            professional_requester=professional,
            plan=self.config.plan_contact,
            rights=self.config.rights_contacts,
            taglines=self.config.taglines,
            expedited=track_for(content.get("priority"), listed_reasons(content)).value
            == "expedited",
            now=now,
            note=note,
        )
        for letter in letters:
            to_member = letter.recipient == patient_key
            destination = (
                ("member-notice-url" if self.config.member_notice_url else None)
                if to_member
                else "provider-endpoint"
            )
            communication = notice_communication(
                render(letter.context),
                flags=translation_flags(letter.context),
                communication_id=str(uuid.uuid4()),
                recipient=letter.recipient,
                patient_key=patient_key,
                request_key=request.key,
                claim_response_key=claim_response.key,
                delivered_now=destination is None,
                now=now,
            )
            await self._send(tx, communication, destination, now)
        if letters:
            log.info("Task/%s: %d notice(s) written", task_id, len(letters))

    async def _write(
        self, tx: StoreTransaction, body: dict[str, Any], existing: StoredResource | None
    ) -> StoredResource:
        validate_resource(body)  # what we emit must be as valid as what we accept
        now = self.clock()
        if existing is None:
            result = await self.resources.create_in(
                tx, body, path=body["resourceType"], pending=frozenset()
            )
            return result.resource
        return await tx.resources.replace(
            existing, self.resources_meta(body, existing, now), now=now
        )

    async def _record_provenance(
        self, tx: StoreTransaction, provenance: dict[str, Any], now: datetime
    ) -> None:
        """Provenance names versions, some of them written in this transaction: stored as is."""
        await tx.resources.insert(with_meta(provenance, self.resources.new_id(), 1, now), now=now)

    async def _find_by_trace(
        self, tx: StoreTransaction, resource_type: str, task_id: str
    ) -> StoredResource | None:
        return await self.resources.find_conditional(  # under the Task row lock
            tx, resource_type, f"identifier={pas.TRACE_SYSTEM}|{task_id}", lock=False
        )

    # -- background work -----------------------------------------------------------------------

    async def run_due_jobs(self, *, limit: int = 20) -> int:
        """Evaluate pended requests whose retry time has come; returns how many were tried."""
        now = self.clock()
        async with self.store.transaction() as tx:
            jobs = await tx.jobs.claim(
                now=now, lease_until=now + timedelta(seconds=self.config.lease_seconds), limit=limit
            )
        for job in jobs:
            try:
                await self.evaluate(job.task_id)
            except Exception as exc:
                log.warning("retry of Task/%s failed (%s)", job.task_id, type(exc).__name__)
        return len(jobs)

    async def flag_nearing_deadline(self, *, limit: int = 200) -> int:
        """Issue #10: a request still undecided past `warn_at_share` of its window is flagged once
        (Task priority raised, the warning recorded on the Task, a WARNING with its id) so that a
        reviewer decides it before 42 CFR 438.404(c)(5) makes it a denial. Returns how many."""
        now = self.clock()
        share = self.config.warn_at_share
        flagged = 0
        async with self.store.transaction() as tx:
            horizon = warning_horizon(now, share)
            for job in await tx.jobs.undecided(due_before=horizon, limit=limit):
                if job.due_at <= now:
                    continue  # the deadline sweep's now
                seen = await tx.resources.read("Task", job.task_id)
                if seen is None or not _needs_warning(seen.content, share, now):
                    continue
                task = await tx.resources.read_for_update("Task", job.task_id)  # lock only to flag
                if task is None or not _needs_warning(task.content, share, now):
                    continue
                raised = flag_for_review(task.content, now)
                raised.pop("meta", None)
                await tx.resources.replace(task, self.resources_meta(raised, task, now), now=now)
                flagged += 1
                log.warning(
                    "Task/%s is undecided past %d%% of its window (due %s): a reviewer must decide",
                    task.id,
                    round(share * 100),
                    format_instant(job.due_at),
                )
        return flagged

    async def nearing_deadline_count(self, *, limit: int = 10_000) -> int:
        """For monitoring: undecided requests past the warning share of their window."""
        now = self.clock()
        async with self.store.transaction(write=False) as tx:
            horizon = warning_horizon(now, self.config.warn_at_share)
            jobs = await tx.jobs.undecided(due_before=horizon, limit=limit)
            tasks = await tx.resources.read_many(("Task", j.task_id) for j in jobs)
        return sum(
            1
            for t in tasks.values()
            if t.content.get("status") in UNDECIDED
            and past_warning_share(t.content, self.config.warn_at_share, now)
        )

    async def expire_overdue(self, *, limit: int = 50) -> int:
        """Regulatory §6: an undecided request whose deadline passed is a denial, that day."""
        now = self.clock()
        expired = 0
        async with self.store.transaction() as tx:
            jobs = await tx.jobs.claim(
                now=now,
                lease_until=now + timedelta(seconds=self.config.lease_seconds),
                limit=limit,
                overdue=True,
            )
            for job in jobs:
                task = await tx.resources.read_for_update("Task", job.task_id)
                if task is None or task.content.get("status") not in UNDECIDED:
                    await tx.jobs.set(job.task_id, state="done")
                    continue
                focus = _local_key(reference_of(task.content.get("focus")), self.resources.base_url)
                request = await tx.resources.read(*focus.split("/", 1)) if focus else None
                if request is None:
                    await tx.jobs.set(job.task_id, state="done")
                    continue
                decision = Decision.deny(DenialReason.DEADLINE_EXPIRED).with_trail(
                    (RuleStep("deadline_expired", DEADLINE_BASIS, Outcome.DENIED.value),)
                )
                await self._write_decision(tx, task, request, decision, now)
                await tx.jobs.set(job.task_id, state="done")
                expired += 1
                log.info("Task/%s denied: deadline expired", job.task_id)
        return expired


def _needs_warning(task: dict[str, Any], share: float, now: datetime) -> bool:
    return (
        task.get("status") in UNDECIDED
        and not is_flagged(task)
        and past_warning_share(task, share, now)
    )


def _business_status(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == STATUS_SYSTEM:
            code: str = coding.get("code")
            return code
    return None


def _local_key(reference: str | None, base_url: str) -> str | None:
    if not reference:
        return None
    ref = parse_reference(reference, base_url=base_url)
    return ref.local_key


def _normalize(reference: str | None, base_url: str) -> str | None:
    return _local_key(reference, base_url) or reference


def _same_reference(a: str | None, b: str | None) -> bool:
    return bool(a and b and a == b)


async def _read_keys(
    tx: StoreTransaction, references: Iterable[str | None], base_url: str
) -> dict[str, dict[str, Any]]:
    keys = [k for k in (_local_key(r, base_url) for r in references) if k]
    found = await tx.resources.read_many(tuple(k.split("/", 1)) for k in keys)  # type: ignore[misc]
    return {key: stored.content for key, stored in found.items()}


def _reviewer_reference(extension: dict[str, Any] | None) -> str | None:
    """The reviewer's reference out of the PAS claimResponseReviewer extension."""
    for part in (extension or {}).get("extension") or []:
        if part.get("url") == "reviewer":
            reference = (part.get("valueReference") or {}).get("reference")
            return str(reference) if reference else None
    return None
