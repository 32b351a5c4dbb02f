"""Recording a decision (contract §4.3-§4.5): the Claim (once), the ClaimResponse (created or
updated), the Task moved to match, the written notices, the Provenance, and the subscribers told.

The one path every decision takes: the evaluation, a reviewer's `$decide`, the deadline sweep, a
PAS answer pended for time, and (its notification and provenance) a PAS cancellation.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapter import telemetry
from fhir_adapter.codes import STATUS_SYSTEM
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.deadlines import is_expedited
from fhir_adapter.workflow.decisions import TASK_FOR_OUTCOME, already_recorded, reviewer_reference
from fhir_adapter.workflow.intake import initial_provider_reference
from fhir_adapter.workflow.letters import letters_for, notice_draft, translation_flags
from fhir_adapter.workflow.provenance import decision_provenance
from fhir_adapter.workflow.requester import requester_kind
from fhir_adapter.workflow.states import transition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReviewerSays:
    """What a reviewer adds to a decision they make."""

    reviewer: dict[str, Any] | None = None  # the PAS claimResponseReviewer extension
    note: str | None = None
    authorized_until: datetime | None = None


def _professional(requester: str | None) -> str | None:
    """Claim.provider and ClaimResponse.requestor name professionals and organizations only."""
    return requester if requester_kind(requester) == "professional" else None


class DecisionRecorder:
    """Writes a decision and everything that goes with it, in the caller's transaction."""

    def __init__(self, context: WorkflowContext) -> None:
        self.context = context

    async def record(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        request: StoredResource,
        decision: Decision,
        now: datetime,
        says: ReviewerSays = ReviewerSays(),
    ) -> StoredResource:
        """Record `decision` for the (locked) Task; returns the Task as it now stands."""
        content = request.content
        patient = reference_of(content.get("subject")) or ""
        requester = reference_of(content.get("requester"))
        # Both look-ups first and in one search, so that it need not wait for this transaction's
        # own writes.
        existing, claim_found = await self.context.decision_and_claim(tx, task.id, request.key)
        claim = claim_found or await self._claim(tx, task, request, now)
        response_body = pas.build_claim_response(
            decision,
            task_id=task.id,
            claim_key=claim.key,
            patient=patient,
            insurer=self.context.config.plan_organization,
            requestor=_professional(requester),
            now=now,
            reviewer=says.reviewer,
            note=says.note,
            authorized_until=says.authorized_until,
        )
        claim_response = await self.context.write(tx, response_body, existing)
        unchanged = already_recorded(task.content, decision)
        targets = [f"{claim_response.key}/_history/{claim_response.version_id}"]
        if not unchanged:
            targets.append(f"{task.key}/_history/{task.version_id + 1}")
        await self.context.record_provenance(
            tx,
            decision_provenance(
                targets=targets,
                request=request.key,
                plan=self.context.config.plan_organization,
                recorded=now,
                created=existing is None,
                reviewer=reviewer_reference(says.reviewer),
            ),
            now,
        )
        if unchanged:
            return task
        stored = await self._move_task(tx, task, decision, claim_response, now)
        telemetry.decision_recorded(decision.outcome.value)  # issue #13: decisions by outcome
        await self._send_letters(tx, task.id, request, decision, claim_response, now, says.note)
        await self.notify(tx, claim_response, patient, requester, now)
        return stored

    async def _claim(
        self, tx: StoreTransaction, task: StoredResource, request: StoredResource, now: datetime
    ) -> StoredResource:
        """The request's Claim, written with its first decision (none was found)."""
        content = request.content
        requester = reference_of(content.get("requester"))
        provider = (
            _professional(requester)
            or initial_provider_reference(content)
            or self.context.config.plan_organization
        )
        body = pas.build_claim(
            task_id=task.id,
            request_key=request.key,
            patient=reference_of(content.get("subject")) or "",
            coverage=reference_of((content.get("insurance") or [{}])[0]) or "",
            provider=provider,
            insurer=self.context.config.plan_organization,
            expedited=is_expedited(content),
            now=now,
        )
        return await self.context.write(tx, body, None)

    async def _move_task(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        decision: Decision,
        claim_response: StoredResource,
        now: datetime,
    ) -> StoredResource:
        """The Task's status for the outcome, and the ClaimResponse as its one decision output."""
        moved = transition(
            task.content,
            TASK_FOR_OUTCOME[decision.outcome],
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
        return await self.context.replace(tx, task, moved, now)

    async def notify(
        self,
        tx: StoreTransaction,
        claim_response: StoredResource,
        patient: str | None,
        requester: str | None,
        now: datetime,
    ) -> None:
        """Subscribers of decisions (and of the PAS topic) hear of this ClaimResponse change."""
        subscriptions = self.context.subscriptions
        if subscriptions is not None:
            await subscriptions.notify(
                tx,
                claim_response,
                patient=patient,
                org_identifiers=lambda: self._org_identifiers(tx, requester),
                now=now,
            )

    async def _org_identifiers(self, tx: StoreTransaction, requester: str | None) -> set[str]:
        """PAS `org-identifier`: the identifiers of the requesting organization (or of the
        requester's organization), the submitter a PAS subscriber filters on."""
        found = await self.context.read_key(tx, self.context.key(requester))
        values: set[str] = set()
        for resource in [found.content] if found else []:
            org_key = self.context.key(reference_of(resource.get("organization")))
            org = await self.context.read_key(tx, org_key)
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
        """Policy V, 42 CFR 438.404: the written notices, created with the decision they announce
        (in `preparation`, each with its render job; the notice deadline counts from now)."""
        context, config = self.context, self.context.config
        content = request.content
        patient_key = context.key(reference_of(content.get("subject"))) or ""
        patient = await context.read_key(tx, patient_key)
        requester = reference_of(content.get("requester"))
        # a representative reads the member's notice; no provider endpoint
        professional = context.key(requester) if _professional(requester) else None
        letters = letters_for(
            decision,
            task_id=task_id,
            request=content,
            request_key=request.key,
            patient=patient.content if patient else None,
            patient_key=patient_key,
            professional_requester=professional,
            plan=config.plan_contact,
            rights=config.rights_contacts,
            taglines=config.taglines,
            expedited=is_expedited(content),
            now=now,
            note=note,
        )
        for letter in letters:
            to_member = letter.recipient == patient_key
            destination = context.member_destination() if to_member else "provider-endpoint"
            draft = notice_draft(
                communication_id=str(uuid.uuid4()),
                recipient=letter.recipient,
                patient_key=patient_key,
                request_key=request.key,
                claim_response_key=claim_response.key,
                flags=translation_flags(letter.context),
            )
            # Issue #13: rendered by the worker right after the answer, from this very letter.
            await context.draft_notice(tx, draft, letter.context, destination, now)
        if letters:
            log.info("Task/%s: %d notice(s) drafted", task_id, len(letters))
