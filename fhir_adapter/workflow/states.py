"""The Task state machine: the allowed transitions as data, and one guarded function to move."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from fhir_adapter.codes import STATUS_SYSTEM, BusinessStatus
from fhir_adapter.errors import InvalidTransitionError
from fhir_adapter.fhir.dates import format_instant


class TaskStatus(StrEnum):
    """FHIR R4 task-status codes, as this workflow uses them."""

    DRAFT = "draft"  # not yet submitted
    REQUESTED = "requested"  # submitted by the EHR, not yet seen
    RECEIVED = "received"  # the adapter has it; the decision clock runs
    ACCEPTED = "accepted"  # approved (in network, or out of network with authorization)
    REJECTED = "rejected"  # denied; statusReason says why
    READY = "ready"
    CANCELLED = "cancelled"  # withdrawn by the requester
    IN_PROGRESS = "in-progress"  # the second-opinion visit is under way
    ON_HOLD = "on-hold"  # pended: waiting for a reviewer or for the directory
    FAILED = "failed"
    COMPLETED = "completed"  # the consultation report came back
    ENTERED_IN_ERROR = "entered-in-error"


TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.DRAFT: frozenset({TaskStatus.REQUESTED, TaskStatus.CANCELLED}),
    TaskStatus.REQUESTED: frozenset(
        {TaskStatus.RECEIVED, TaskStatus.CANCELLED, TaskStatus.ENTERED_IN_ERROR}
    ),
    TaskStatus.RECEIVED: frozenset(
        {TaskStatus.ACCEPTED, TaskStatus.REJECTED, TaskStatus.ON_HOLD, TaskStatus.CANCELLED}
    ),
    TaskStatus.ON_HOLD: frozenset(
        {TaskStatus.ACCEPTED, TaskStatus.REJECTED, TaskStatus.ON_HOLD, TaskStatus.CANCELLED}
    ),
    TaskStatus.ACCEPTED: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED, TaskStatus.CANCELLED}
    ),
    TaskStatus.IN_PROGRESS: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.READY: frozenset({TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED}),
    # Terminal states: nothing leaves them.
    TaskStatus.REJECTED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.ENTERED_IN_ERROR: frozenset(),
}

UNDECIDED = frozenset({TaskStatus.REQUESTED, TaskStatus.RECEIVED, TaskStatus.ON_HOLD})


def transition(
    task: dict[str, Any],
    to: TaskStatus,
    *,
    business_status: BusinessStatus,
    now: datetime,
    status_reason: str | None = None,
) -> dict[str, Any]:
    """A copy of `task` moved to `to`; raises InvalidTransitionError for a move not in TRANSITIONS."""
    current = TaskStatus(task["status"])
    if to not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing (it is final)"
        raise InvalidTransitionError(
            f"Task/{task.get('id')} is {current}; it can move to {allowed}, not to {to}",
            expression="Task.status",
        )
    moved = dict(task)
    moved["status"] = to.value
    moved["businessStatus"] = {
        "coding": [{"system": STATUS_SYSTEM, "code": business_status.value}],
        "text": business_status.value.replace("-", " "),
    }
    stamp = format_instant(now)
    moved["lastModified"] = stamp
    period = dict(moved.get("executionPeriod") or {})
    period.setdefault("start", stamp)
    if to in (TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.CANCELLED, TaskStatus.FAILED):
        period["end"] = stamp
    moved["executionPeriod"] = period
    if status_reason:
        moved["statusReason"] = {"text": status_reason}
    else:
        moved.pop("statusReason", None)
    return moved
