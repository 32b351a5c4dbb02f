"""Decisions that do not come from the rules, and what a decision does to its Task (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_adapter.codes import STATUS_SYSTEM, DenialReason
from fhir_adapter.policy.decision import Decision, Outcome, RuleStep
from fhir_adapter.policy.facts import Provider
from fhir_adapter.workflow.deadlines import is_flagged, past_warning_share
from fhir_adapter.workflow.review import ReviewerDecision
from fhir_adapter.workflow.states import UNDECIDED, TaskStatus

DEADLINE_BASIS = "42 CFR 438.404(c)(5): no decision within the time allowed is a denial that day"
REVIEWER_BASIS = "42 CFR 438.210(b)(3): decided by a reviewer with appropriate clinical expertise"
ANSWER_TIME_BASIS = (
    "PAS spec-7: the provider directory did not answer within the time a "
    "PAS answer allows; pended, decided when it does"
)

TASK_FOR_OUTCOME: Mapping[Outcome, TaskStatus] = {
    Outcome.APPROVED_IN_NETWORK: TaskStatus.ACCEPTED,
    Outcome.APPROVED_OUT_OF_NETWORK: TaskStatus.ACCEPTED,
    Outcome.DENIED: TaskStatus.REJECTED,
    Outcome.PENDING_REVIEW: TaskStatus.ON_HOLD,
    Outcome.PENDING_DIRECTORY: TaskStatus.ON_HOLD,
}

FINISHED = frozenset(
    {
        TaskStatus.REJECTED,
        TaskStatus.COMPLETED,
        TaskStatus.CANCELLED,
        TaskStatus.FAILED,
        TaskStatus.ENTERED_IN_ERROR,
    }
)
CANCELLABLE = frozenset(TaskStatus) - FINISHED  # a finished request cannot be cancelled


def deadline_denial() -> Decision:
    """Regulatory §6: an undecided request whose deadline passed is a denial, that day."""
    return Decision.deny(DenialReason.DEADLINE_EXPIRED).with_trail(
        (RuleStep("deadline_expired", DEADLINE_BASIS, Outcome.DENIED.value),)
    )


def reviewer_decision(review: ReviewerDecision) -> Decision:
    """`$decide`: what the reviewer decided, with the providers they offer."""
    return Decision(
        review.outcome,
        providers=tuple(Provider(role_reference=ref) for ref in review.providers),
        denial_reason=DenialReason.REVIEWER_DENIED if review.outcome is Outcome.DENIED else None,
        trail=(RuleStep("reviewer_decision", REVIEWER_BASIS, review.outcome.value),),
    )


def answer_time_pending() -> Decision:
    """PAS spec-7/8: not decided within the answer time, so answered pended (A4) at once."""
    return Decision(
        Outcome.PENDING_DIRECTORY,
        trail=(RuleStep("answer_time", ANSWER_TIME_BASIS, Outcome.PENDING_DIRECTORY.value),),
    )


def business_status(task: Mapping[str, Any]) -> str | None:
    """The Task's businessStatus code in this workflow's system."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == STATUS_SYSTEM:
            code: str | None = coding.get("code")
            return code
    return None


def already_recorded(task: Mapping[str, Any], decision: Decision) -> bool:
    """Whether the Task already stands where the decision would move it (a pended request
    pended again): the ClaimResponse changes, the Task does not."""
    return (
        task.get("status") == TASK_FOR_OUTCOME[decision.outcome].value
        and business_status(task) == decision.outcome.business_status.value
    )


def needs_warning(task: Mapping[str, Any], share: float, now: datetime) -> bool:
    """Issue #10: undecided, past `share` of its window, and not flagged yet."""
    return (
        task.get("status") in UNDECIDED
        and not is_flagged(task)
        and past_warning_share(task, share, now)
    )


def reviewer_reference(extension: Mapping[str, Any] | None) -> str | None:
    """The reviewer's reference out of the PAS claimResponseReviewer extension."""
    for part in (extension or {}).get("extension") or []:
        if part.get("url") == "reviewer":
            reference = (part.get("valueReference") or {}).get("reference")
            return str(reference) if reference else None
    return None
