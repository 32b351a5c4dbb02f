"""A reviewer's decision (`Task/{id}/$decide`, the review workspace) and a PAS update of a pended
request (the Task's next version records it; the request is evaluated again)."""

from __future__ import annotations

import asyncio
import logging

from fhir_adapter.errors import NotFoundError
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.ports.store import StoredResource
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.services.second_opinion.evaluation import Evaluation
from fhir_adapter.services.second_opinion.locking import lock_request_task
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder, ReviewerSays
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.decisions import reviewer_decision
from fhir_adapter.workflow.review import ReviewerDecision

log = logging.getLogger(__name__)


class ReviewerDecisions:
    """What plan staff decide about a request the rules left pended (or not yet decided)."""

    def __init__(
        self, context: WorkflowContext, recorder: DecisionRecorder, evaluation: Evaluation
    ) -> None:
        self.context = context
        self.recorder = recorder
        self.evaluation = evaluation

    async def decide_by_reviewer(self, task_id: str, review: ReviewerDecision) -> StoredResource:
        """`Task/{id}/$decide`: 404 for no second-opinion Task, 409 for a decided one; returns
        the ClaimResponse recorded."""
        context = self.context
        now = context.clock()
        async with context.store.transaction() as tx:
            task = await lock_request_task(
                tx, task_id, refusal="; only an undecided request can be decided"
            )
            focus = context.key(reference_of(task.content.get("focus")))
            request = await context.read_key(tx, focus)
            if request is None:
                raise NotFoundError(f"The request of Task/{task_id} is missing")
            says = ReviewerSays(
                reviewer=pas.reviewer_extension(
                    review.reviewer,
                    review.reviewer_npi,
                    review.reviewer_specialty,
                    display=review.reviewer_display,
                ),
                note=review.reason,
                authorized_until=review.authorized_until,
            )
            decision = reviewer_decision(review)
            await self.recorder.record(tx, task, request, decision, now, says)
            await tx.jobs.set(task_id, state="done")
            response = await context.decision_of(tx, task_id)
        assert response is not None
        log.info("Task/%s decided by a reviewer: %s", task_id, review.outcome.value)
        return response

    async def amend(self, task_id: str, *, note: str) -> StoredResource:
        """PAS update of a pended request: the Task's next version records it (one history), and
        the request is evaluated again at once (the worker retries what this leaves)."""
        context = self.context
        now = context.clock()
        async with context.store.transaction() as tx:
            task = await lock_request_task(
                tx,
                task_id,
                refusal=": only a pended request is updated; PAS: submit a new request",
            )
            updated = dict(task.content)
            updated["lastModified"] = format_instant(now)
            updated["note"] = [
                *(updated.get("note") or []),
                {"time": format_instant(now), "text": note},
            ]
            stored = await context.replace(tx, task, updated, now)
            await tx.jobs.set(task_id, state="evaluate", next_attempt_at=now)
        try:
            await asyncio.wait_for(
                self.evaluation.evaluate(task_id), timeout=context.config.answer_within_seconds
            )
        except Exception as exc:  # stored; the worker evaluates it again
            log.warning("re-evaluation of Task/%s failed (%s)", task_id, type(exc).__name__)
        return stored
