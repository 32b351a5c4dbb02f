"""Intake of second-opinion requests (contract §3, §4.1), as write hooks: a resubmitted request
is the stored one; a new request, its member and Coverage are checked inside the submitting
transaction (a 422 with every issue stores nothing); its Task is received (the clock starts, the
due date is set, a job is owed); once committed, it is evaluated at once."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from fhir_adapter.codes import TASK_CODE_SYSTEM, BusinessStatus
from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import reference_of
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.search import identifier_condition
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.hooks import NoHooks
from fhir_adapter.services.second_opinion.context import WorkflowContext, WorkflowHook
from fhir_adapter.services.second_opinion.evaluation import Evaluation
from fhir_adapter.services.second_opinion.gathering import LoadedRequest
from fhir_adapter.workflow.deadlines import due_at, request_track
from fhir_adapter.workflow.intake import (
    check_coverage,
    check_member,
    check_request,
    check_task,
    check_unmarked_request,
    is_fulfillment_task,
    is_second_opinion_request,
)
from fhir_adapter.workflow.states import TaskStatus, transition

log = logging.getLogger(__name__)


class ResubmissionConditions(NoHooks):
    """Contract §3: resubmitting a request (or its Task) never creates a second one."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        if is_second_opinion_request(content):
            for identifier in content.get("identifier") or []:
                if identifier.get("system") and identifier.get("value"):
                    return identifier_condition(str(identifier["system"]), str(identifier["value"]))
        if is_fulfillment_task(content):
            focus = reference_of(content.get("focus"))
            if focus and not focus.startswith("urn:") and "/" in focus:
                return f"focus={focus}&code={TASK_CODE_SYSTEM}|fulfill"
        return None


@dataclass(frozen=True, slots=True)
class ReceivedTask(WriteResult):
    """A Task received by this write, with what its decision needs from the store, gathered in
    the same transaction (the evaluation right after the commit does not read it again)."""

    loaded: LoadedRequest | None = None


class RequestIntake(WorkflowHook):
    """Checks new second-opinion requests and receives their Tasks; evaluates them once stored."""

    def __init__(self, context: WorkflowContext, evaluation: Evaluation) -> None:
        super().__init__(context)
        self.evaluation = evaluation

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
            if not result.created or result.resource.content.get("resourceType") != "Task":
                continue
            request = await self._request_of(tx, result, new_requests)
            if request is None or not is_second_opinion_request(request.content):
                if new_requests and is_fulfillment_task(result.resource.content):
                    # a Task sent with a request must be that request's Task
                    issues += check_task(result.resource.content, None, result.path)
                continue
            task_issues = check_task(result.resource.content, request.content, result.path)
            issues += task_issues
            if not task_issues and not issues:
                received[index] = await self._receive(tx, result, request, results)
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return [received.get(i, r) for i, r in enumerate(results)]

    async def _request_of(
        self, tx: StoreTransaction, task: WriteResult, new_requests: dict[str, WriteResult]
    ) -> StoredResource | None:
        """The ServiceRequest a new Task focuses on: written with it, or stored before."""
        focus = self.context.key(reference_of(task.resource.content.get("focus")))
        written = new_requests.get(focus or "")
        if written is not None:
            return written.resource
        if focus and focus.startswith("ServiceRequest/"):
            return await self.context.read_key(tx, focus)
        return None

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
            key = self.context.key(reference)
            if not key or "/" not in key:
                continue  # check_request or the reference check names this one
            if key in written:  # in this request: name its own elements
                where = written[key].path
                issues += check(written[key].resource.content, where, where)
                continue
            stored = await self.context.read_key(tx, key)
            if stored is not None:  # stored before: the request's reference to it is at fault
                where = f"{request.path}.{element}"
                issues += [
                    replace(issue, expression=where)
                    for issue in check(stored.content, where, f"{where} ({key})")
                ]
        return issues

    async def _receive(
        self,
        tx: StoreTransaction,
        result: WriteResult,
        request: StoredResource,
        results: list[WriteResult],
    ) -> WriteResult:
        """Contract §4.1: the Task is received, the clock starts, the due date is set."""
        context = self.context
        now = context.clock()
        track = request_track(request.content)
        due = due_at(now, track, context.closed_days())
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
        task["owner"] = {"reference": context.config.plan_organization}
        # created in this very transaction: nobody else can see it
        stored = await context.replace(tx, result.resource, task, now)
        # This request's own process decides it right after the commit (`after_commit`); the
        # worker takes it over only once that has had its time, never beside it.
        own_turn = timedelta(seconds=context.config.answer_within_seconds)
        await tx.jobs.add(stored.id, due_at=due, first_attempt_at=now + own_turn)
        log.info("received Task/%s (%s track, due %s)", stored.id, track.value, format_instant(due))
        written = {r.resource.key: r.resource for r in results}
        loaded = await self.evaluation.gathering.load_in(tx, stored, request, written)
        return ReceivedTask(stored, created=True, path=result.path, loaded=loaded)

    async def after_commit(self, results: list[WriteResult]) -> None:
        """Decide newly received requests right away; the worker retries whatever this leaves."""
        for result in results:
            content = result.resource.content
            if is_fulfillment_task(content) and content.get("status") == TaskStatus.RECEIVED:
                try:
                    # PAS spec-7: answer within about 15 s; a slow directory leaves it to the worker.
                    await asyncio.wait_for(
                        self.evaluation.evaluate(
                            result.resource.id,
                            result.loaded if isinstance(result, ReceivedTask) else None,
                        ),
                        timeout=self.context.config.answer_within_seconds,
                    )
                except Exception as exc:  # the request is stored and its job will be retried
                    log.warning(
                        "evaluation of Task/%s failed (%s); the worker will retry",
                        result.resource.id,
                        type(exc).__name__,
                    )
