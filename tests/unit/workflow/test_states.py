"""The Task state machine: transitions as data, one guarded move."""

from datetime import UTC, datetime

import pytest

from fhir_adapter.codes import STATUS_SYSTEM, BusinessStatus
from fhir_adapter.errors import InvalidTransitionError
from fhir_adapter.workflow.states import TRANSITIONS, UNDECIDED, TaskStatus, transition

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def task(status: str) -> dict:
    return {"resourceType": "Task", "id": "t1", "status": status, "intent": "order"}


def test_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(TaskStatus)


def test_received_sets_business_status_and_times() -> None:
    moved = transition(
        task("requested"), TaskStatus.RECEIVED, business_status=BusinessStatus.RECEIVED, now=NOW
    )
    assert moved["status"] == "received"
    assert moved["businessStatus"]["coding"] == [{"system": STATUS_SYSTEM, "code": "received"}]
    assert moved["lastModified"] == "2026-11-25T18:00:00.000Z"
    assert moved["executionPeriod"] == {"start": "2026-11-25T18:00:00.000Z"}


def test_rejection_records_the_reason_and_ends_the_period() -> None:
    received = transition(
        task("requested"), TaskStatus.RECEIVED, business_status=BusinessStatus.RECEIVED, now=NOW
    )
    rejected = transition(
        received,
        TaskStatus.REJECTED,
        business_status=BusinessStatus.DENIED,
        now=NOW,
        status_reason="not eligible",
    )
    assert rejected["statusReason"] == {"text": "not eligible"}
    assert rejected["executionPeriod"]["end"] == "2026-11-25T18:00:00.000Z"


@pytest.mark.parametrize(
    "final", ["rejected", "cancelled", "failed", "completed", "entered-in-error"]
)
def test_terminal_states_cannot_move(final: str) -> None:
    with pytest.raises(InvalidTransitionError, match="it is final"):
        transition(
            task(final),
            TaskStatus.ACCEPTED,
            business_status=BusinessStatus.APPROVED_IN_NETWORK,
            now=NOW,
        )


def test_skipping_receipt_is_refused_with_the_allowed_moves() -> None:
    with pytest.raises(
        InvalidTransitionError,
        match="requested; it can move to cancelled, entered-in-error, received",
    ):
        transition(
            task("requested"),
            TaskStatus.ACCEPTED,
            business_status=BusinessStatus.APPROVED_IN_NETWORK,
            now=NOW,
        )


def test_pended_requests_can_be_decided() -> None:
    assert {TaskStatus.ACCEPTED, TaskStatus.REJECTED} <= TRANSITIONS[TaskStatus.ON_HOLD]
    assert TaskStatus.ON_HOLD in UNDECIDED and TaskStatus.ACCEPTED not in UNDECIDED
