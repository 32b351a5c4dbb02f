"""Consultation reports (policy VI, contract §4.6), as a write hook: a Consultation Report for an
approved request completes its Task and goes to the PCP and the member, through the outbox, in
the very transaction that stores it (the member's letter rendered by the worker right after)."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from fhir_adapter.codes import TASK_CODE_SYSTEM, BusinessStatus
from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowHook
from fhir_adapter.workflow.decisions import business_status
from fhir_adapter.workflow.intake import is_second_opinion_request
from fhir_adapter.workflow.letters import report_letter, translation_flags, with_flags
from fhir_adapter.workflow.provenance import change_provenance
from fhir_adapter.workflow.reports import (
    CONSULT_NOTE,
    LOINC,
    check_report,
    check_report_subject,
    is_consultation_report,
    report_communication,
)
from fhir_adapter.workflow.states import TaskStatus, transition

log = logging.getLogger(__name__)


class ReportCompletion(WorkflowHook):
    """Accepts consultation reports for approved requests and completes their Tasks."""

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
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
            if not (result.created and is_consultation_report(result.resource.content)):
                continue
            request = await self._request_of(tx, result.resource, written)
            if request is None or not is_second_opinion_request(request.content):
                continue  # a DiagnosticReport about something else
            task = await self.context.resources.find_conditional(
                tx, "Task", f"focus={request.key}&code={TASK_CODE_SYSTEM}|fulfill", lock=False
            )
            report_issues = self._check(result, request, task)
            issues += report_issues
            if not report_issues and task is not None:
                await self._complete(tx, task, request, result.resource, proposals)
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return results

    async def _request_of(
        self, tx: StoreTransaction, report: StoredResource, written: dict[str, StoredResource]
    ) -> StoredResource | None:
        """The ServiceRequest the report is based on: written with it, or stored before."""
        keys = (self.context.key(reference_of(b)) for b in report.content["basedOn"])
        key = next((k for k in keys if k and k.startswith("ServiceRequest/")), None)
        return written.get(key or "") or await self.context.read_key(tx, key)

    def _check(
        self, result: WriteResult, request: StoredResource, task: StoredResource | None
    ) -> list[Issue]:
        """The report itself, its subject, and a Task approved for it."""
        report = result.resource.content
        key = self.context.key
        issues = check_report(report, result.path)
        issues += check_report_subject(
            key(reference_of(report.get("subject"))),
            key(reference_of(request.content.get("subject"))),
            result.path,
        )
        where = f"{result.path}.basedOn"
        if task is None:
            text = f"{where}: {request.key} has no second-opinion Task"
            issues.append(Issue("business-rule", text, where))
        elif task.content.get("status") != TaskStatus.ACCEPTED:
            state = business_status(task.content) or task.content.get("status")
            text = (
                f"{where}: the request is {state}; a Consultation Report is accepted only for "
                "an approved request"
            )
            issues.append(Issue("business-rule", text, where))
        return issues

    async def _complete(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        request: StoredResource,
        report: StoredResource,
        proposals: list[str],
    ) -> None:
        context = self.context
        now = context.clock()
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
        stored = await context.replace(tx, task, completed, now)
        await context.record_provenance(
            tx,
            change_provenance(
                target=f"{stored.key}/_history/{stored.version_id}",
                recorded=now,
                activity="second-opinion completed by its consultation report",
                plan=context.config.plan_organization,
                source=report.key,
            ),
            now,
        )
        await self._send_copies(tx, request, report, proposals, now)
        log.info("Task/%s completed with %s", task.id, report.key)

    async def _send_copies(
        self,
        tx: StoreTransaction,
        request: StoredResource,
        report: StoredResource,
        proposals: list[str],
        now: datetime,
    ) -> None:
        """The report to the member's PCP (their endpoint) and to the member (as a letter, drafted
        with its render job: issue #13, the worker renders it right after the answer)."""
        context = self.context
        patient_key = context.key(reference_of(request.content.get("subject"))) or ""
        patient = await context.read_key(tx, patient_key)
        practitioners = (patient.content if patient else {}).get("generalPractitioner") or []
        pcp = next((k for k in (context.key(reference_of(p)) for p in practitioners) if k), None)
        sender = context.key(reference_of((report.content.get("performer") or [{}])[0]))
        for recipient in [pcp, patient_key] if pcp else [patient_key]:
            to_member = recipient == patient_key
            communication = report_communication(
                communication_id=str(uuid.uuid4()),
                report_key=report.key,
                request_key=request.key,
                patient_key=patient_key,
                recipient=recipient,
                sender=sender,
                proposals=proposals,
                drafted=to_member,
            )
            if not to_member:
                await context.send(tx, communication, "provider-endpoint", now)
                continue
            letter = report_letter(  # the member's copy is a letter they can read
                report.content,
                request=request.content,
                request_key=request.key,
                patient=patient.content if patient else None,
                plan=context.config.plan_contact,
                now=now,
                rights=context.config.rights_contacts,
                taglines=context.config.taglines,
            )
            draft = with_flags(communication, translation_flags(letter))
            # None: the member reads it through the API once rendered
            await context.draft_notice(tx, draft, letter, context.member_destination(), now)
