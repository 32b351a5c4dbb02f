"""Decisions that do not come from the rules, and what a decision does to its Task (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_adapter.codes import STATUS_SYSTEM, DenialReason
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.workflow.deadlines import flag_for_review
from fhir_adapter.workflow.decisions import (
    CANCELLABLE,
    TASK_FOR_OUTCOME,
    already_recorded,
    answer_time_pending,
    business_status,
    deadline_denial,
    needs_warning,
    reviewer_decision,
    reviewer_reference,
)
from fhir_adapter.workflow.review import ReviewerDecision
from fhir_adapter.workflow.states import TaskStatus

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def task(status: str, code: str | None = None, *, started_days_ago: float = 1) -> dict:
    start = NOW - timedelta(days=started_days_ago)
    content: dict = {
        "status": status,
        "restriction": {
            "period": {
                "start": format_instant(start),
                "end": format_instant(start + timedelta(days=2)),
            }
        },
    }
    if code:
        content["businessStatus"] = {"coding": [{"system": STATUS_SYSTEM, "code": code}]}
    return content


def test_the_business_status_code() -> None:
    assert business_status(task("on-hold", "pending-review")) == "pending-review"
    assert business_status(task("on-hold")) is None
    other = {"businessStatus": {"coding": [{"system": "x", "code": "y"}]}}
    assert business_status(other) is None


def test_a_decision_already_recorded_leaves_the_task_as_it_is() -> None:
    pended = Decision(Outcome.PENDING_DIRECTORY)
    code = Outcome.PENDING_DIRECTORY.business_status.value
    assert already_recorded(task("on-hold", code), pended)
    assert not already_recorded(task("received", "received"), pended)
    assert TASK_FOR_OUTCOME[Outcome.DENIED] is TaskStatus.REJECTED


def test_the_warning_is_due_once_past_its_share() -> None:
    assert needs_warning(task("on-hold", started_days_ago=1.8), 0.75, NOW)
    assert not needs_warning(task("on-hold", started_days_ago=1), 0.75, NOW)
    assert not needs_warning(task("accepted", started_days_ago=1.8), 0.75, NOW)
    flagged = flag_for_review(task("on-hold", started_days_ago=1.8), NOW)
    assert not needs_warning(flagged, 0.75, NOW)


def test_decisions_made_outside_the_rules() -> None:
    expired = deadline_denial()
    assert expired.outcome is Outcome.DENIED
    assert expired.denial_reason is DenialReason.DEADLINE_EXPIRED
    assert expired.trail[-1].rule == "deadline_expired"
    pended = answer_time_pending()
    assert pended.outcome is Outcome.PENDING_DIRECTORY and pended.trail[0].rule == "answer_time"
    review = ReviewerDecision(
        Outcome.DENIED, ("PractitionerRole/x",), "no", "Practitioner/r", None, {}
    )
    denied = reviewer_decision(review)
    assert denied.denial_reason is DenialReason.REVIEWER_DENIED
    assert [p.role_reference for p in denied.providers] == ["PractitionerRole/x"]
    approved = reviewer_decision(
        ReviewerDecision(Outcome.APPROVED_IN_NETWORK, (), None, "Practitioner/r", None, {})
    )
    assert approved.denial_reason is None


def test_the_reviewer_named_in_the_extension() -> None:
    extension = {
        "extension": [
            {"url": "number", "valueString": "1"},
            {"url": "reviewer", "valueReference": {"reference": "Practitioner/r"}},
        ]
    }
    assert reviewer_reference(extension) == "Practitioner/r"
    assert reviewer_reference(None) is None
    assert reviewer_reference({"extension": [{"url": "reviewer", "valueReference": {}}]}) is None


def test_only_a_finished_request_cannot_be_cancelled() -> None:
    assert {"received", "on-hold", "accepted", "in-progress"} <= CANCELLABLE
    assert not {"rejected", "completed", "cancelled"} & CANCELLABLE
