"""PAS cancellation (certificationType 3, issue #12): the Task cancelled, a new ClaimResponse
version saying so, the notices not yet sent withdrawn, subscribers notified; one transaction."""

from __future__ import annotations

import logging
from datetime import datetime

from fhir_adapter.codes import BusinessStatus
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.services.second_opinion.locking import lock_request_task
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder
from fhir_adapter.workflow import pas_changes
from fhir_adapter.workflow.decisions import CANCELLABLE
from fhir_adapter.workflow.provenance import decision_provenance
from fhir_adapter.workflow.states import TaskStatus, transition

log = logging.getLogger(__name__)

_FINISHED = (
    ": a finished request cannot be cancelled "
    "(PAS: a denied request is not changed; submit a new request instead)"
)


class Cancellation:
    """Cancels a request its submitter withdraws."""

    def __init__(self, context: WorkflowContext, recorder: DecisionRecorder) -> None:
        self.context = context
        self.recorder = recorder

    async def cancel(self, task_id: str, *, reason: str) -> StoredResource:
        """A request already finished (denied, completed, cancelled) is 409 with the reason.
        Returns the ClaimResponse as it now stands (the Task when there is none yet)."""
        context = self.context
        now = context.clock()
        async with context.store.transaction() as tx:
            task = await lock_request_task(tx, task_id, refusal=_FINISHED, allowed=CANCELLABLE)
            moved = transition(
                task.content,
                TaskStatus.CANCELLED,
                business_status=BusinessStatus.CANCELLED,
                now=now,
                status_reason=f"Cancelled by its submitter: {reason}",
            )
            stored_task = await context.replace(tx, task, moved, now)
            await tx.jobs.set(task_id, state="done")
            existing = await context.decision_of(tx, task_id)
            if existing is None:
                return stored_task
            response = await self._cancel_decision(tx, stored_task, existing, reason, now)
        return response

    async def _cancel_decision(
        self,
        tx: StoreTransaction,
        task: StoredResource,
        existing: StoredResource,
        reason: str,
        now: datetime,
    ) -> StoredResource:
        """The ClaimResponse's cancelled version, its Provenance, the notices withdrawn, and
        the subscribers told."""
        context = self.context
        body = pas_changes.cancelled_claim_response(existing.content, now=now, reason=reason)
        response = await context.write(tx, body, existing)
        focus = context.key(reference_of(task.content.get("focus")))
        withdrawn = await self._withdraw_notices(tx, focus or "", now)
        patient = reference_of(existing.content.get("patient"))
        request = await context.read_key(tx, focus)
        requester = reference_of((request.content if request else {}).get("requester"))
        await context.record_provenance(
            tx,
            decision_provenance(
                targets=[
                    f"{response.key}/_history/{response.version_id}",
                    f"{task.key}/_history/{task.version_id}",
                ],
                request=focus or task.key,
                plan=context.config.plan_organization,
                recorded=now,
                created=False,
                reviewer=None,
            ),
            now,
        )
        await self.recorder.notify(tx, response, patient, requester, now)
        log.info("Task/%s cancelled; %d notice(s) withdrawn", task.id, withdrawn)
        return response

    async def _withdraw_notices(self, tx: StoreTransaction, request_key: str, now: datetime) -> int:
        """Notices about this request still waiting for delivery: their outbox items
        withdrawn, the Communications `not-done` with the reason (never `entered-in-error`:
        they were right when written, they are just no longer to be sent)."""
        query = self.context.resources.parse_query(
            "Communication",
            [("based-on", request_key), ("status", "preparation,in-progress"), ("_count", "50")],
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
            await self.context.replace(tx, current, updated, now)
        return len(ids)
