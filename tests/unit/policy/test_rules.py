"""The policy rules, one at a time and through the engine, on plain facts (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from fhir_adapter.codes import DEFAULT_PRIMARY_CARE_TAXONOMY, DenialReason, ReviewReason
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.policy.engine import evaluate, first_decision
from fhir_adapter.policy.facts import Care, Provider, RequestFacts
from fhir_adapter.policy.rules import POLICY_RULES, RULE_BASIS

NOW = datetime(2026, 11, 25, 18, tzinfo=UTC)
ORTHO = "207X00000X"
FAMILY = "207Q00000X"


def prov(
    name: str, specialty: str = ORTHO, *, in_network: bool = True, org: str = "Organization/a"
) -> Provider:
    return Provider(
        role_reference=f"http://dir/PractitionerRole/{name}",
        specialties=frozenset({specialty}),
        npi=f"npi-{name}",
        organization_reference=org,
        in_network=in_network,
    )


INITIAL = prov("initial")
PCP = prov("pcp", FAMILY)


def facts(**overrides: object) -> RequestFacts:
    base = RequestFacts(
        now=NOW,
        plan_reference="Organization/plan",
        coverage_status="active",
        coverage_start=datetime(2026, 1, 1, tzinfo=UTC),
        coverage_end=datetime(2026, 12, 31, tzinfo=UTC),
        coverage_payors=("Organization/plan",),
        requester_kind="member",
        requester_is_the_member=True,
        requester_is_pcp=False,
        requester_is_initial_provider=False,
        reasons=frozenset({"questioned-surgery"}),
        care=Care.SPECIALIST,
        needed_specialty=ORTHO,
        primary_care_taxonomy=DEFAULT_PRIMARY_CARE_TAXONOMY,
        initial_provider=INITIAL,
        in_network=(INITIAL, prov("b"), prov("c")),
        out_of_network=(prov("far", in_network=False),),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_in_network_specialists_exclude_the_initial_provider() -> None:
    decision = evaluate(facts())
    assert decision.outcome is Outcome.APPROVED_IN_NETWORK
    assert [p.npi for p in decision.providers] == ["npi-b", "npi-c"]
    assert decision.outcome.review_action == "NA"


def test_the_trail_lists_every_rule_run_up_to_the_decision() -> None:
    decision = evaluate(facts())
    assert [s.result for s in decision.trail][-1] == "approved-in-network"
    assert decision.trail[-1].rule == "in_network_provider_available"
    assert all(s.result == "passed" for s in decision.trail[:-1])
    assert decision.trail[0].basis.startswith("Policy (coverage statement)")


def test_every_rule_has_its_basis_as_data_not_from_a_docstring() -> None:
    assert set(RULE_BASIS) == {rule.__name__ for rule in POLICY_RULES}
    assert all(RULE_BASIS.values())

    def documented(facts: RequestFacts) -> Decision | None:
        """Policy X: a docstring is prose for readers, never the recorded basis."""
        return None

    decision = first_decision(facts(), [documented, *POLICY_RULES])
    assert decision is not None
    assert decision.trail[0].basis == ""
    assert decision.trail[1].basis == RULE_BASIS["coverage_is_active"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"coverage_status": "cancelled"}, DenialReason.COVERAGE_INACTIVE),
        ({"coverage_end": datetime(2026, 6, 30, tzinfo=UTC)}, DenialReason.COVERAGE_INACTIVE),
        ({"coverage_payors": ("Organization/other-plan",)}, DenialReason.NOT_PLAN_MEMBER),
    ],
    ids=["inactive", "expired", "other-plan"],
)
def test_denials_carry_a_specific_reason(overrides: dict, reason: DenialReason) -> None:
    decision = evaluate(facts(**overrides))
    assert decision.outcome is Outcome.DENIED
    assert decision.denial_reason is reason
    assert decision.outcome.review_action == "A3"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"requester_kind": "professional", "requester_is_the_member": False},
            ReviewReason.REQUESTER_UNSETTLED,
        ),
        (
            {"requester_kind": "other", "requester_is_the_member": False},
            ReviewReason.REQUESTER_UNSETTLED,
        ),
        (
            {"requester_kind": "representative", "requester_is_the_member": False},
            ReviewReason.REQUESTER_UNSETTLED,
        ),
        (
            {
                "requester_kind": "professional",
                "requester_is_pcp": True,
                "requester": prov("pcp", FAMILY, in_network=False),
            },
            ReviewReason.REQUESTER_NOT_PARTICIPATING,
        ),
    ],
    ids=[
        "unrelated-professional",
        "other-requester",
        "representative-of-someone-else",
        "non-participating-pcp",
    ],
)
def test_only_administrative_facts_deny_the_rest_pends_for_a_reviewer(
    overrides: dict, reason: ReviewReason
) -> None:
    """42 CFR 438.210(b)(3): who may ask is not an administrative fact when the data cannot
    settle it; a person decides (A4), with the rule trail saying why."""
    decision = evaluate(facts(**overrides))
    assert decision.outcome is Outcome.PENDING_REVIEW
    assert decision.review_reason is reason
    assert decision.outcome.review_action == "A4"
    assert decision.trail[-1].result == "pending-review"


@pytest.mark.parametrize(
    "overrides",
    [
        {"requester_kind": "representative", "requester_represents_member": True},
        {
            "requester_kind": "professional",
            "requester_is_treating": True,
            "requester": prov("treating", ORTHO),
        },
    ],
    ids=["authorized-representative", "treating-specialist"],
)
def test_a_representative_and_a_treating_professional_may_ask(overrides: dict) -> None:
    decision = evaluate(facts(requester_is_the_member=False, **overrides))
    assert decision.outcome is Outcome.APPROVED_IN_NETWORK


def test_a_payor_only_the_unreachable_directory_knows_pends_and_never_denies() -> None:
    decision = evaluate(
        facts(coverage_payors=("http://dir/fhir/Organization/x",), payor_unsettled=True)
    )
    assert decision.outcome is Outcome.PENDING_DIRECTORY


def test_the_offer_is_ranked_and_cut_to_the_configured_number() -> None:
    group = "http://dir/fhir/Organization/group"
    far = replace(prov("far-in"), position=(38.58, -121.49), accepting_new_patients=True)
    near = replace(prov("near"), position=(34.06, -118.25), accepting_new_patients=True)
    closed = replace(prov("closed"), accepting_new_patients=False)
    spanish = replace(prov("es"), languages=frozenset({"es"}), accepting_new_patients=True)
    same_group = replace(prov("group"), organization_reference=group, accepting_new_patients=False)
    decision = evaluate(
        facts(
            in_network=(closed, far, near, spanish, same_group),
            pcp_organization=group,
            member_language="es-MX",
            member_position=(34.05, -118.24),
            candidates_offered=3,
        )
    )
    assert [p.npi for p in decision.providers] == ["npi-group", "npi-es", "npi-near"]


def test_treating_professionals_may_ask() -> None:
    for role in (
        {"requester_is_pcp": True, "requester": PCP},
        {"requester_is_initial_provider": True, "requester": INITIAL},
    ):
        decision = evaluate(
            facts(requester_kind="professional", requester_is_the_member=False, **role)
        )
        assert decision.outcome is Outcome.APPROVED_IN_NETWORK


def test_no_listed_reason_goes_to_review_not_denial() -> None:
    decision = evaluate(facts(reasons=frozenset()))
    assert decision.outcome is Outcome.PENDING_REVIEW
    assert decision.review_reason is ReviewReason.NO_LISTED_REASON


def test_unreachable_directory_pends_and_never_denies() -> None:
    decision = evaluate(
        facts(directory_available=False, requester_kind="professional", requester_is_pcp=True)
    )
    assert decision.outcome is Outcome.PENDING_DIRECTORY
    assert decision.outcome.review_action == "A4"


def test_member_selected_in_network_provider_is_honoured() -> None:
    chosen = prov("c")
    decision = evaluate(facts(selected_provider=chosen))
    assert decision.providers == (chosen,)


def test_member_selected_provider_of_another_specialty_is_not_honoured() -> None:
    decision = evaluate(facts(selected_provider=prov("cardio", "207RC0000X")))
    assert [p.npi for p in decision.providers] == ["npi-b", "npi-c"]


def test_no_in_network_provider_authorizes_out_of_network() -> None:
    decision = evaluate(facts(in_network=(INITIAL,)))
    assert decision.outcome is Outcome.APPROVED_OUT_OF_NETWORK
    assert [p.npi for p in decision.providers] == ["npi-far"]
    assert decision.outcome.review_action == "A1"


def test_member_selected_out_of_network_provider_is_authorized_when_needed() -> None:
    chosen = prov("chosen-far", in_network=False)
    decision = evaluate(facts(in_network=(INITIAL,), selected_provider=chosen))
    assert decision.providers == (chosen,)


def test_nobody_qualified_goes_to_review() -> None:
    decision = evaluate(facts(in_network=(INITIAL,), out_of_network=()))
    assert decision.outcome is Outcome.PENDING_REVIEW
    assert decision.review_reason is ReviewReason.NO_QUALIFIED_PROVIDER


def test_pcp_care_prefers_the_pcp_organization() -> None:
    same_group = prov("same", "207R00000X", org="Organization/pcp-group")
    other_group = prov("other", FAMILY, org="Organization/elsewhere")
    decision = evaluate(
        facts(
            care=Care.PRIMARY,
            needed_specialty=None,
            initial_provider=PCP,
            pcp_organization="Organization/pcp-group",
            in_network=(other_group, PCP, same_group, prov("surgeon")),
        )
    )
    assert [p.npi for p in decision.providers] == ["npi-same", "npi-other"]


def test_unknown_specialty_goes_to_review() -> None:
    decision = evaluate(facts(care=None, needed_specialty=None))
    assert decision.review_reason is ReviewReason.SPECIALTY_UNKNOWN
