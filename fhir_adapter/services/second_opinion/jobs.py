"""The background sweeps (contract §5, regulatory §6): retrying pended evaluations, flagging
requests nearing their deadline, denying the overdue ones, and answering pended a request that
could not be decided within the PAS answer time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.ports.store import StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.services.second_opinion.evaluation import Evaluation
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder
from fhir_adapter.workflow.deadlines import flag_for_review, past_warning_share, warning_horizon
from fhir_adapter.workflow.decisions import answer_time_pending, deadline_denial, needs_warning
from fhir_adapter.workflow.states import UNDECIDED

log = logging.getLogger(__name__)


class WorkflowJobs:
    """What the background worker runs, each in its own transactions."""

    def __init__(
        self, context: WorkflowContext, evaluation: Evaluation, recorder: DecisionRecorder
    ) -> None:
        self.context = context
        self.evaluation = evaluation
        self.recorder = recorder

    async def run_due_jobs(self, *, limit: int = 20) -> int:
        """Evaluate pended requests whose retry time has come; returns how many were tried."""
        now = self.context.clock()
        lease = timedelta(seconds=self.context.config.lease_seconds)
        async with self.context.store.transaction() as tx:
            jobs = await tx.jobs.claim(now=now, lease_until=now + lease, limit=limit)
        for job in jobs:
            try:
                await self.evaluation.evaluate(job.task_id)
            except Exception as exc:
                log.warning("retry of Task/%s failed (%s)", job.task_id, type(exc).__name__)
        return len(jobs)

    async def flag_nearing_deadline(self, *, limit: int = 200) -> int:
        """Issue #10: a request still undecided past `warn_at_share` of its window is flagged once
        (Task priority raised, the warning recorded on the Task, a WARNING with its id) so that a
        reviewer decides it before 42 CFR 438.404(c)(5) makes it a denial. Returns how many."""
        now = self.context.clock()
        share = self.context.config.warn_at_share
        flagged = 0
        async with self.context.store.transaction() as tx:
            for job in await tx.jobs.undecided(due_before=warning_horizon(now, share), limit=limit):
                if job.due_at <= now:
                    continue  # the deadline sweep's now
                seen = await tx.resources.read("Task", job.task_id)
                if seen is None or not needs_warning(seen.content, share, now):
                    continue
                task = await tx.resources.read_for_update("Task", job.task_id)  # lock only to flag
                if task is None or not needs_warning(task.content, share, now):
                    continue
                await self.context.replace(tx, task, flag_for_review(task.content, now), now)
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
        now = self.context.clock()
        share = self.context.config.warn_at_share
        async with self.context.store.transaction(write=False) as tx:
            jobs = await tx.jobs.undecided(due_before=warning_horizon(now, share), limit=limit)
            tasks = await tx.resources.read_many(("Task", j.task_id) for j in jobs)
        return sum(
            1
            for t in tasks.values()
            if t.content.get("status") in UNDECIDED and past_warning_share(t.content, share, now)
        )

    async def expire_overdue(self, *, limit: int = 50) -> int:
        """Regulatory §6: an undecided request whose deadline passed is a denial, that day."""
        now = self.context.clock()
        lease = timedelta(seconds=self.context.config.lease_seconds)
        expired = 0
        async with self.context.store.transaction() as tx:
            jobs = await tx.jobs.claim(now=now, lease_until=now + lease, limit=limit, overdue=True)
            for job in jobs:
                if await self._deny_overdue(tx, job.task_id, now):
                    expired += 1
                    log.info("Task/%s denied: deadline expired", job.task_id)
                await tx.jobs.set(job.task_id, state="done")
        return expired

    async def _deny_overdue(self, tx: StoreTransaction, task_id: str, now: datetime) -> bool:
        """Deny one overdue request if it is still undecided; whether it was."""
        task = await tx.resources.read_for_update("Task", task_id)
        if task is None or task.content.get("status") not in UNDECIDED:
            return False
        request = await self.context.read_key(
            tx, self.context.key(reference_of(task.content.get("focus")))
        )
        if request is None:
            return False
        await self.recorder.record(tx, task, request, deadline_denial(), now)
        return True

    async def pend_unanswered(self, task_id: str) -> None:
        """PAS spec-7/8: a request whose evaluation did not finish within the answer time (a
        slow directory) is answered pended (A4) at once; the worker decides it, and the final
        ClaimResponse, under the same identifiers, comes through the subscription and $inquire."""
        context = self.context
        now = context.clock()
        async with context.store.transaction() as tx:
            task = await tx.resources.read_for_update("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return  # decided meanwhile
            if await context.decision_of(tx, task_id) is not None:
                return
            request = await context.read_key(
                tx, context.key(reference_of(task.content.get("focus")))
            )
            if request is None:
                return
            await self.recorder.record(tx, task, request, answer_time_pending(), now)
            await tx.jobs.set(task_id, state="evaluate", next_attempt_at=now)
        log.info("Task/%s pended: not decided within the PAS answer time", task_id)
