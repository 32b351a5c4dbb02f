"""One small function per rule of the Second Medical Opinion policy, in the order they apply.

Each rule returns None when it has nothing to say (the request passes it) or a Decision.
RULE_BASIS names the policy section or regulation each rule encodes: that text is stored on the
rule trail of every ClaimResponse and printed in letters, so it is data here, never taken from a
docstring (rewording a docstring must not change what is recorded).
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_adapter.codes import DenialReason, Reason, ReviewReason
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.policy.facts import Care, Provider, RequestFacts
from fhir_adapter.policy.ranking import rank_providers

Rule = Callable[[RequestFacts], Decision | None]


def coverage_is_active(facts: RequestFacts) -> Decision | None:
    """Policy (coverage statement); 42 CFR 438.210: the member's coverage is active on the date."""
    active = facts.coverage_status == "active"
    started = facts.coverage_start is None or facts.coverage_start <= facts.now
    not_ended = facts.coverage_end is None or facts.now <= facts.coverage_end
    if active and started and not_ended:
        return None
    return Decision.deny(DenialReason.COVERAGE_INACTIVE)


def coverage_is_with_the_plan(facts: RequestFacts) -> Decision | None:
    """Policy (coverage statement): the coverage is this plan's (Coverage.payor is the plan); a
    payor only the unreachable directory could identify pends (contract §5: never deny for it)."""
    if facts.plan_reference in facts.coverage_payors:
        return None
    if facts.payor_unsettled:
        return Decision(Outcome.PENDING_DIRECTORY)
    return Decision.deny(DenialReason.NOT_PLAN_MEMBER)


def requester_is_member_or_treating_professional(facts: RequestFacts) -> Decision | None:
    """HSC 1383.15; policy: the member, the member's authorized representative, or a professional
    treating the member (PCP, initial provider, care team, the request's own references) asks.
    42 CFR 438.210(b)(3): what the data cannot settle goes to a reviewer, never to a denial."""
    kind = facts.requester_kind
    if kind == "member" and facts.requester_is_the_member:
        return None
    if kind == "representative" and facts.requester_represents_member:
        return None
    if kind == "professional" and (
        facts.requester_is_pcp or facts.requester_is_initial_provider or facts.requester_is_treating
    ):
        return None
    return Decision.review(ReviewReason.REQUESTER_UNSETTLED)


def directory_answered(facts: RequestFacts) -> Decision | None:
    """Contract §5: an unreachable directory pends the request; our failure never denies it."""
    if facts.directory_available:
        return None
    return Decision(Outcome.PENDING_DIRECTORY)


def requesting_professional_participates(facts: RequestFacts) -> Decision | None:
    """HSC 1383.15; policy: a professional's request counts from a participating provider; one the
    directory does not list as participating is for a reviewer (42 CFR 438.210(b)(3))."""
    if facts.requester_kind != "professional":
        return None
    if facts.requester is not None and facts.requester.in_network:
        return None
    return Decision.review(ReviewReason.REQUESTER_NOT_PARTICIPATING)


def reason_is_listed(facts: RequestFacts) -> Decision | None:
    """Policy II A-E; regulatory.md §7: a request fitting none of the five goes to review, not denial."""
    if facts.reasons & set(Reason):
        return None
    return Decision.review(ReviewReason.NO_LISTED_REASON)


def specialty_is_known(facts: RequestFacts) -> Decision | None:
    """Policy III: routing needs the specialty of the care in question."""
    if facts.care is not None and (facts.care is Care.PRIMARY or facts.needed_specialty):
        return None
    return Decision.review(ReviewReason.SPECIALTY_UNKNOWN)


def member_selected_provider_qualifies(facts: RequestFacts) -> Decision | None:
    """Policy III: for specialist care the member may select the in-network provider."""
    chosen = facts.selected_provider
    if chosen is None or not chosen.in_network or not _qualifies(chosen, facts):
        return None
    return Decision(Outcome.APPROVED_IN_NETWORK, providers=(chosen,))


def in_network_provider_available(facts: RequestFacts) -> Decision | None:
    """Policy III-IV: a qualified in-network professional gives it, with no authorization needed;
    the member is offered the best-ranked few (the PCP's own medical group first, per HSC 1383.15
    EOC practice)."""
    qualified = [p for p in facts.in_network if p.in_network and _qualifies(p, facts)]
    if not qualified:
        return None
    ranked = _ranked(qualified, facts)[: max(facts.candidates_offered, 1)]
    return Decision(Outcome.APPROVED_IN_NETWORK, providers=tuple(ranked))


def out_of_network_authorized(facts: RequestFacts) -> Decision | None:
    """Policy IV; 42 CFR 438.206(b)(4): no qualified in-network provider, so the plan authorizes a
    qualified out-of-network one at no cost to the member (the member's choice when it qualifies)."""
    chosen = facts.selected_provider
    if chosen is not None and not chosen.in_network and _qualifies(chosen, facts):
        return Decision(Outcome.APPROVED_OUT_OF_NETWORK, providers=(chosen,))
    qualified = [p for p in facts.out_of_network if not p.in_network and _qualifies(p, facts)]
    if not qualified:
        return None
    return Decision(Outcome.APPROVED_OUT_OF_NETWORK, providers=(_ranked(qualified, facts)[0],))


def nobody_qualifies(facts: RequestFacts) -> Decision | None:
    """Policy IV: with no qualified provider anywhere, a reviewer must find one."""
    return Decision.review(ReviewReason.NO_QUALIFIED_PROVIDER)


def _ranked(providers: list[Provider], facts: RequestFacts) -> list[Provider]:
    return rank_providers(
        providers,
        pcp_organization=facts.pcp_organization,
        member_language=facts.member_language,
        member_position=facts.member_position,
    )


def _qualifies(provider: Provider, facts: RequestFacts) -> bool:
    """Policy definitions: qualified = the needed specialty (PCP care: any primary-care taxonomy),
    and not the professional whose opinion is questioned."""
    if provider.is_same_professional(facts.initial_provider):
        return False
    if facts.care is Care.PRIMARY and not facts.needed_specialty:
        return bool(provider.specialties & facts.primary_care_taxonomy)
    return facts.needed_specialty in provider.specialties


RULE_BASIS: dict[str, str] = {
    "coverage_is_active": "Policy (coverage statement); 42 CFR 438.210",
    "coverage_is_with_the_plan": "Policy (coverage statement)",
    "requester_is_member_or_treating_professional": "HSC 1383.15; policy",
    "directory_answered": "Contract §5",
    "requesting_professional_participates": "HSC 1383.15; policy",
    "reason_is_listed": "Policy II A-E; regulatory.md §7",
    "specialty_is_known": "Policy III",
    "member_selected_provider_qualifies": "Policy III",
    "in_network_provider_available": "Policy III-IV",
    "out_of_network_authorized": "Policy IV; 42 CFR 438.206(b)(4)",
    "nobody_qualifies": "Policy IV",
}

POLICY_RULES: tuple[Rule, ...] = (
    coverage_is_active,
    coverage_is_with_the_plan,
    requester_is_member_or_treating_professional,
    directory_answered,
    requesting_professional_participates,
    reason_is_listed,
    specialty_is_known,
    member_selected_provider_qualifies,
    in_network_provider_available,
    out_of_network_authorized,
    nobody_qualifies,
)
