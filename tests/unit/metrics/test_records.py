"""Reading decisions and appeals from FHIR resources, and the rules of a time-frame extension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_adapter.codes import DenialReason, ReviewAction
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.metrics.core import AppealOutcome
from fhir_adapter.metrics.records import (
    TIMEFRAME_EXTENSION,
    ExtensionReason,
    appeal_of,
    appeal_task,
    extend_timeframe,
    review_action,
    timeframe_extension,
)
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.workflow import pas
from fhir_adapter.workflow.deadlines import Track

NOW = datetime(2026, 6, 3, 17, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 6, 2, 17, 0, tzinfo=UTC)
DUE = RECEIVED + timedelta(days=7)


def claim_response(decision: Decision) -> dict[str, Any]:
    return pas.build_claim_response(
        decision,
        task_id="t1",
        claim_key="Claim/c1",
        patient="Patient/p1",
        insurer="Organization/plan",
        requestor=None,
        now=NOW,
    )


@pytest.mark.parametrize(
    ("decision", "action"),
    [
        (Decision(Outcome.APPROVED_IN_NETWORK), ReviewAction.NO_ACTION_REQUIRED),
        (Decision(Outcome.APPROVED_OUT_OF_NETWORK), ReviewAction.CERTIFIED),
        (Decision.deny(DenialReason.REVIEWER_DENIED), ReviewAction.NOT_CERTIFIED),
        (Decision(Outcome.PENDING_DIRECTORY), ReviewAction.PENDED),
    ],
    ids=["NA", "A1", "A3", "A4"],
)
def test_the_review_action_is_read_from_the_claim_response_the_workflow_builds(
    decision: Decision, action: ReviewAction
) -> None:
    assert review_action(claim_response(decision)) is action


def test_an_unknown_or_missing_review_action_is_none() -> None:
    response = claim_response(Decision(Outcome.APPROVED_OUT_OF_NETWORK))
    adjudication = response["item"][0]["adjudication"][0]
    adjudication["extension"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "X9"
    assert review_action(response) is None
    assert review_action({"resourceType": "ClaimResponse"}) is None


def received_task() -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "on-hold",
        "intent": "order",
        "restriction": {
            "period": {"start": "2026-06-02T17:00:00.000Z", "end": "2026-06-09T17:00:00.000Z"}
        },
    }


def extend(task: dict[str, Any], until: datetime) -> dict[str, Any]:
    return extend_timeframe(
        task,
        reason=ExtensionReason.MEMBER_REQUEST,
        until=until,
        received=RECEIVED,
        track=Track.STANDARD,
        now=NOW,
    )


def test_an_extension_moves_the_due_date_and_keeps_the_original() -> None:
    task = received_task()
    extended = extend(task, DUE + timedelta(days=14))
    assert extended["restriction"]["period"] == {
        "start": "2026-06-02T17:00:00.000Z",
        "end": "2026-06-23T17:00:00.000Z",
    }
    extension = timeframe_extension(extended)
    assert extension is not None and extension["url"] == TIMEFRAME_EXTENSION
    parts = {e["url"]: e for e in extension["extension"]}
    assert parts["reason"]["valueCoding"]["code"] == "member-request"
    assert parts["originalDue"]["valueDateTime"] == "2026-06-09T17:00:00.000Z"
    assert timeframe_extension(task) is None  # the original is not changed
    validate_resource(extended)


@pytest.mark.parametrize(
    ("until", "message"),
    [
        (DUE + timedelta(days=14, seconds=1), "at most 14 days"),
        (DUE, "after the current one"),
        (DUE - timedelta(days=1), "after the current one"),
    ],
    ids=["too long", "not later", "earlier"],
)
def test_an_extension_breaking_a_rule_is_refused(until: datetime, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extend(received_task(), until)


def test_a_request_is_extended_once() -> None:
    once = extend(received_task(), DUE + timedelta(days=3))
    with pytest.raises(ValueError, match="extended already"):
        extend(once, DUE + timedelta(days=4))


def test_an_appeal_record_reads_back_what_was_recorded() -> None:
    decided = datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
    task = appeal_task(
        request_task="Task/t1",
        claim_response="ClaimResponse/cr1",
        patient="Patient/p1",
        plan="Organization/plan",
        outcome=AppealOutcome.OVERTURNED,
        decided_at=decided,
        received_at=decided - timedelta(days=10),
        now=NOW,
    )
    validate_resource(task)
    assert appeal_of(task) == ("Task/t1", AppealOutcome.OVERTURNED, decided)
    assert appeal_of(received_task()) is None  # not an appeal record
