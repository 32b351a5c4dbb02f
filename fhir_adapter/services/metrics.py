"""CMS-0057-F metrics from what the store records, and the two facts it records for them:
appeal outcomes and extended decision time frames (fhir_adapter/metrics/records.py)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

from fhir_adapter.codes import TASK_CODE_SYSTEM, ReviewAction
from fhir_adapter.errors import ConflictError, NotFoundError, UnprocessableEntityError
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import ResourceKey, identifier_value, local_key, reference_of
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.metrics.core import (
    AppealOutcome,
    Determination,
    MetricsReport,
    Period,
    RequestRecord,
    compute,
)
from fhir_adapter.metrics.records import (
    APPEAL_CODE,
    EVENT_SYSTEM,
    ExtensionReason,
    appeal_of,
    appeal_task,
    extend_timeframe,
    review_action,
    timeframe_extension,
)
from fhir_adapter.ports.store import ResourceStore, StoredResource, StoreTransaction
from fhir_adapter.services.resources import Clock, ResourceService, with_meta
from fhir_adapter.services.second_opinion.locking import lock_request_task
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.deadlines import request_track
from fhir_adapter.workflow.intake import is_fulfillment_task
from fhir_adapter.workflow.provenance import record_provenance
from fhir_adapter.workflow.states import UNDECIDED

log = logging.getLogger(__name__)

_FINAL = {
    ReviewAction.NO_ACTION_REQUIRED: Determination.APPROVED,
    ReviewAction.CERTIFIED: Determination.APPROVED,
    ReviewAction.NOT_CERTIFIED: Determination.DENIED,
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Decision:
    action: ReviewAction
    at: datetime


class MetricsService:
    """Reads the second-opinion requests of the store as metric records; records appeals and
    extensions with a Provenance each, as the workflow does for decisions."""

    def __init__(
        self, store: ResourceStore, resources: ResourceService, *, plan: str, clock: Clock
    ) -> None:
        self.store = store
        self.resources = resources
        self.plan = plan
        self.clock = clock

    async def report(self, period: Period, *, as_of: datetime | None = None) -> MetricsReport:
        return compute(await self.records(), period, as_of=as_of or self.clock())

    async def records(self) -> list[RequestRecord]:
        """Every received second-opinion request, decided or pended (withdrawn ones left out)."""
        async with self.store.transaction(write=False) as tx:
            tasks = await self._search_all(tx, "Task", f"{TASK_CODE_SYSTEM}|fulfill")
            appeals = await self._search_all(tx, "Task", f"{EVENT_SYSTEM}|{APPEAL_CODE}")
            requests = await tx.resources.read_many(
                key for t in tasks if (key := self._key(reference_of(t.content.get("focus"))))
            )
            outputs = {t.id: self._decision_key(t.content) for t in tasks}
            responses = await tx.resources.read_many(key for key in outputs.values() if key)
            decisions = {
                key: await self._first_decision(tx, stored) for key, stored in responses.items()
            }
        appealed: dict[str, tuple[AppealOutcome, datetime]] = {}
        for stored in appeals:
            found = appeal_of(stored.content)
            key = self._key(found[0]) if found else None
            if found and key:
                appealed[str(key)] = (found[1], found[2])
        records = []
        for task in tasks:
            focus = self._key(reference_of(task.content.get("focus")))
            request = requests.get(str(focus)) if focus else None
            decision = decisions.get(str(outputs[task.id])) if outputs[task.id] else None
            record = self._record(task, request, decision, appealed.get(task.key))
            if record is not None:
                records.append(record)
        return records

    def _record(
        self,
        task: StoredResource,
        request: StoredResource | None,
        decision: _Decision | None,
        appeal: tuple[AppealOutcome, datetime] | None,
    ) -> RequestRecord | None:
        content = task.content
        received = _received_at(content)
        if received is None or content.get("status") == "entered-in-error":
            return None
        if decision is None and content.get("status") not in UNDECIDED:
            return None  # withdrawn before any decision: no determination to report
        track = request_track(request.content if request else content)
        return RequestRecord(
            task_id=task.id,
            track=track,
            received_at=received,
            determination=_FINAL[decision.action] if decision else Determination.PENDED,
            decided_at=decision.at if decision else None,
            authorization_needed=not (
                decision and decision.action is ReviewAction.NO_ACTION_REQUIRED
            ),
            extended=timeframe_extension(content) is not None,
            appeal=appeal[0] if appeal else None,
            appeal_decided_at=appeal[1] if appeal else None,
        )

    async def _first_decision(
        self, tx: StoreTransaction, response: StoredResource
    ) -> _Decision | None:
        """The first final version of a ClaimResponse (a pended one is updated in place when
        decided, and later changes must not move the decision time)."""
        versions = [response]
        if response.version_id > 1:
            versions = sorted(
                await tx.resources.history("ClaimResponse", response.id), key=lambda v: v.version_id
            )
        for version in versions:
            action = review_action(version.content)
            created = version.content.get("created")
            if action in _FINAL and isinstance(created, str):
                return _Decision(action, datetime.fromisoformat(created))
        return None

    async def _search_all(
        self, tx: StoreTransaction, resource_type: str, code: str
    ) -> list[StoredResource]:
        return await self.resources.search_all(tx, resource_type, [("code", code)])

    def _key(self, reference: str | None) -> ResourceKey | None:
        return local_key(reference, self.resources.base_url)

    def _decision_key(self, task: dict[str, Any]) -> ResourceKey | None:
        for output in task.get("output") or []:
            key = self._key(reference_of(output.get("valueReference")))
            if key and key.type == "ClaimResponse":
                return key
        return None

    # -- recording -----------------------------------------------------------------------------

    async def record_appeal(
        self,
        reference: str,
        outcome: AppealOutcome,
        *,
        decided_at: datetime,
        received_at: datetime | None = None,
    ) -> StoredResource:
        """Record the plan's decision on the appeal of a denied request (`Task/id`,
        `ClaimResponse/id`, or a bare id of either); recording again corrects the earlier one."""
        now = self.clock()
        if decided_at.tzinfo is None or (received_at and received_at.tzinfo is None):
            raise UnprocessableEntityError("appeal times need a time zone", expression="decidedAt")
        if received_at and received_at > decided_at:
            raise UnprocessableEntityError(
                "an appeal is decided after it is received", expression="receivedAt"
            )
        if decided_at > now:
            raise UnprocessableEntityError(
                "an appeal is recorded once decided; decidedAt is in the future",
                expression="decidedAt",
            )
        async with self.store.transaction() as tx:
            task, response = await self._appealed(tx, reference)
            decision = await self._first_decision(tx, response)
            if decision is None or decision.action is not ReviewAction.NOT_CERTIFIED:
                raise ConflictError(
                    f"{task.key} was not denied; only a denial can be appealed",
                    expression="ClaimResponse.item.adjudication.extension",
                )
            if decided_at < decision.at or (received_at and received_at < decision.at):
                raise UnprocessableEntityError(
                    f"the appeal cannot precede the denial it appeals ({decision.at.isoformat()})",
                    expression="decidedAt",
                )
            body = appeal_task(
                request_task=task.key,
                claim_response=response.key,
                patient=reference_of(task.content.get("for")),
                plan=self.plan,
                outcome=outcome,
                decided_at=decided_at,
                received_at=received_at,
                now=now,
            )
            validate_resource(body)
            existing = await self.resources.find_conditional(
                tx, "Task", f"code={EVENT_SYSTEM}|{APPEAL_CODE}&based-on={task.key}", lock=False
            )
            if existing is None:
                created = await self.resources.create_in(tx, body, path="Task", pending=frozenset())
                stored = created.resource
            else:
                stored = await tx.resources.replace(
                    existing, with_meta(body, existing.id, existing.version_id + 1, now), now=now
                )
            await self._provenance(tx, stored, now, "appeal outcome recorded")
        log.info("appeal of %s recorded: %s (%s)", task.key, outcome.value, stored.key)
        return stored

    async def _appealed(
        self, tx: StoreTransaction, reference: str
    ) -> tuple[StoredResource, StoredResource]:
        """The request's Task (locked) and its ClaimResponse, from either one's reference."""
        kind, id = ResourceKey.parse(reference) if "/" in reference else ("", reference)
        task: StoredResource | None = None
        if kind in ("", "Task"):
            task = await tx.resources.read_for_update("Task", id)
        if (task is None or not is_fulfillment_task(task.content)) and kind in (
            "",
            "ClaimResponse",
        ):
            response = await tx.resources.read("ClaimResponse", id)
            trace = identifier_value(response.content if response else None, pas.TRACE_SYSTEM)
            task = await tx.resources.read_for_update("Task", str(trace)) if trace else None
        if task is None or not is_fulfillment_task(task.content):
            raise NotFoundError(f"{reference} is not a second-opinion request or its decision")
        key = self._decision_key(task.content)
        response = await tx.resources.read(*key) if key else None
        if response is None:
            raise ConflictError(f"{task.key} has no decision yet; only a denial can be appealed")
        return task, response

    async def extend(
        self, task_id: str, reason: ExtensionReason, *, until: datetime
    ) -> StoredResource:
        """Record that the plan extended the decision time frame of an undecided request to
        `until` (42 CFR 438.210(d)); the deadline sweep then waits for the new due date."""
        now = self.clock()
        async with self.store.transaction() as tx:
            task = await lock_request_task(
                tx, task_id, refusal="; only an undecided request's time frame can be extended"
            )
            received = _received_at(task.content)
            focus = self._key(reference_of(task.content.get("focus")))
            request = await tx.resources.read(*focus) if focus else None
            track = request_track(request.content if request else task.content)
            try:
                body = extend_timeframe(
                    task.content,
                    reason=reason,
                    until=until,
                    received=received or now,
                    track=track,
                    now=now,
                )
            except ValueError as exc:
                raise UnprocessableEntityError(
                    f"Task/{task_id}: {exc}", expression="Task.restriction.period.end"
                ) from None
            body.pop("meta", None)
            body["lastModified"] = format_instant(now)
            validate_resource(body)
            stored = await tx.resources.replace(
                task, with_meta(body, task.id, task.version_id + 1, now), now=now
            )
            job = await tx.jobs.get(task_id)
            if job is not None:
                await tx.jobs.set(task_id, state=job.state, due_at=until)
            await self._provenance(tx, stored, now, "decision time frame extended")
        log.info("Task/%s: decision time frame extended (%s)", task_id, reason.value)
        return stored

    async def _provenance(
        self, tx: StoreTransaction, target: StoredResource, now: datetime, activity: str
    ) -> None:
        provenance = record_provenance(
            targets=[f"{target.key}/_history/{target.version_id}"],
            plan=self.plan,
            recorded=now,
            created=target.version_id == 1,
            activity=activity,
        )
        await tx.resources.insert(with_meta(provenance, self.resources.new_id(), 1, now), now=now)


def _received_at(task: dict[str, Any]) -> datetime | None:
    """When the plan received the request: the decision clock's start (restriction.period)."""
    for text in (
        ((task.get("restriction") or {}).get("period") or {}).get("start"),
        (task.get("executionPeriod") or {}).get("start"),
        task.get("authoredOn"),
    ):
        if isinstance(text, str) and "T" in text:
            return datetime.fromisoformat(text)
    return None
