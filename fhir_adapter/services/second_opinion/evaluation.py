"""Evaluating a received request (contract §4.2-§4.5): gather the facts (directory I/O outside any
transaction), apply the policy, record the decision, and schedule what is left (a retry when the
directory was down, a reviewer for a pended request)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.policy.engine import evaluate
from fhir_adapter.policy.facts import Provider
from fhir_adapter.ports.store import StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowContext
from fhir_adapter.services.second_opinion.gathering import FactGathering, LoadedRequest
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder
from fhir_adapter.workflow.states import UNDECIDED

log = logging.getLogger(__name__)


class Evaluation:
    """Decides a request by the rules, or leaves it pended with its next step scheduled."""

    def __init__(
        self, context: WorkflowContext, gathering: FactGathering, recorder: DecisionRecorder
    ) -> None:
        self.context = context
        self.gathering = gathering
        self.recorder = recorder

    async def evaluate(self, task_id: str, loaded: LoadedRequest | None = None) -> Decision | None:
        """The decision recorded for the Task; None when it is not (any longer) undecided.
        `loaded`: the request as gathered by the transaction that received it (not read again)."""
        loaded = loaded or await self.gathering.load(task_id)
        if loaded is None:
            return None
        decision = evaluate(await self.gathering.facts(loaded))
        await self._record(loaded, decision)
        return decision

    async def candidates(self, task_id: str) -> tuple[tuple[Provider, ...], tuple[Provider, ...]]:
        """The directory's qualified providers for a request (in network, out of network), for
        the review workspace's decision form: the same facts the rules decided on."""
        loaded = await self.gathering.load(task_id)
        if loaded is None:
            return (), ()
        facts = await self.gathering.facts(loaded)
        return facts.in_network, facts.out_of_network

    async def _record(self, loaded: LoadedRequest, decision: Decision) -> None:
        now = self.context.clock()
        task_id = loaded.task.id
        async with self.context.store.transaction() as tx:
            task = await tx.resources.read_for_update("Task", task_id)
            if task is None or task.content.get("status") not in UNDECIDED:
                return  # decided meanwhile (another worker, a reviewer, the deadline sweep)
            await self.recorder.record(tx, task, loaded.request, decision, now)
            await self._schedule(tx, task_id, decision, now)
        log.info(
            "decided Task/%s: %s (%s)",
            task_id,
            decision.outcome.value,
            decision.deciding_rule.rule if decision.deciding_rule else "-",
        )

    async def _schedule(
        self, tx: StoreTransaction, task_id: str, decision: Decision, now: datetime
    ) -> None:
        """Retry a request the directory could not settle (backing off), wait for a reviewer on
        one pended for review, and nothing more for a decided one."""
        if decision.outcome is Outcome.PENDING_DIRECTORY:
            config = self.context.config
            job = await tx.jobs.get(task_id)
            attempts = job.attempts if job else 1
            delay = min(
                config.retry_base_seconds * 2 ** max(attempts - 1, 0), config.retry_max_seconds
            )
            await tx.jobs.set(
                task_id, state="evaluate", next_attempt_at=now + timedelta(seconds=delay)
            )
        elif decision.outcome is Outcome.PENDING_REVIEW:
            await tx.jobs.set(task_id, state="review")
        else:
            await tx.jobs.set(task_id, state="done")
