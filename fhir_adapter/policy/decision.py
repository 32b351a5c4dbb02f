"""A policy decision and the trail of rules that produced it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from fhir_adapter.codes import BusinessStatus, DenialReason, ReviewAction, ReviewReason
from fhir_adapter.policy.facts import Provider


class Outcome(StrEnum):
    APPROVED_IN_NETWORK = "approved-in-network"
    APPROVED_OUT_OF_NETWORK = "approved-out-of-network"
    DENIED = "denied"
    PENDING_REVIEW = "pending-review"
    PENDING_DIRECTORY = "pending-directory"

    @property
    def review_action(self) -> ReviewAction:
        return _REVIEW_ACTION[self]

    @property
    def business_status(self) -> BusinessStatus:
        return BusinessStatus(self.value)

    @property
    def is_final(self) -> bool:
        return self not in (Outcome.PENDING_REVIEW, Outcome.PENDING_DIRECTORY)


_REVIEW_ACTION = {
    Outcome.APPROVED_IN_NETWORK: ReviewAction.NO_ACTION_REQUIRED,
    Outcome.APPROVED_OUT_OF_NETWORK: ReviewAction.CERTIFIED,
    Outcome.DENIED: ReviewAction.NOT_CERTIFIED,
    Outcome.PENDING_REVIEW: ReviewAction.PENDED,
    Outcome.PENDING_DIRECTORY: ReviewAction.PENDED,
}


@dataclass(frozen=True, slots=True)
class RuleStep:
    """One rule the engine ran, with what it said and the policy text it rests on."""

    rule: str
    basis: str
    result: str  # "passed" or the outcome it decided


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    providers: tuple[Provider, ...] = ()
    denial_reason: DenialReason | None = None
    review_reason: ReviewReason | None = None
    trail: tuple[RuleStep, ...] = field(default_factory=tuple)

    @classmethod
    def deny(cls, reason: DenialReason) -> Decision:
        return cls(Outcome.DENIED, denial_reason=reason)

    @classmethod
    def review(cls, reason: ReviewReason) -> Decision:
        return cls(Outcome.PENDING_REVIEW, review_reason=reason)

    def with_trail(self, trail: tuple[RuleStep, ...]) -> Decision:
        return replace(self, trail=trail)

    @property
    def deciding_rule(self) -> RuleStep | None:
        return self.trail[-1] if self.trail else None
