"""The facts a request carries itself: references, NPIs, specialties, care, representation,
the plan's payors, and how the requester relates to the member's care (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_adapter.codes import NPI, NUCC
from fhir_adapter.fhir.elements import npi_of, specialties
from fhir_adapter.policy.facts import Care, Provider
from fhir_adapter.workflow.plan import identifiers_of
from fhir_adapter.workflow.request_facts import (
    DirectoryView,
    LocalRecords,
    base_facts,
    care_of,
    choose_role,
    facts_from,
    local_key,
    normalize,
    payor_verdicts,
    payors_as_named,
    relations,
    same_reference,
)

BASE = "https://adapter.example/fhir"
DIRECTORY = "https://directory.example/fhir"
PRIMARY = frozenset({"207Q00000X"})
CARDIOLOGY = "207RC0000X"
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
PLAN_ID = {"system": "https://plan.example/payer-id", "value": "PLAN"}


def npi(value: str) -> dict[str, Any]:
    return {"system": NPI, "value": value}


def records(
    request: dict[str, Any],
    *,
    patient: dict[str, Any] | None = None,
    coverage: dict[str, Any] | None = None,
    local: dict[str, dict[str, Any]] | None = None,
    treating: tuple[str | None, ...] = (),
) -> LocalRecords:
    return LocalRecords(request, patient, coverage, local or {}, BASE, treating)


LOCAL = {
    "Practitioner/pcp": {"resourceType": "Practitioner", "identifier": [npi("111")]},
    "PractitionerRole/pcp-role": {
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": "Practitioner/pcp"},
        "specialty": [{"coding": [{"system": NUCC, "code": "207Q00000X"}]}],
    },
    "Practitioner/other": {"resourceType": "Practitioner", "identifier": [npi("222")]},
    "RelatedPerson/mother": {
        "resourceType": "RelatedPerson",
        "patient": {"reference": "Patient/p"},
    },
    "Organization/plan": {"resourceType": "Organization", "identifier": [PLAN_ID]},
}


def test_references_to_this_server_become_keys() -> None:
    assert local_key("Patient/p", BASE) == "Patient/p"
    assert local_key(f"{BASE}/Patient/p", BASE) == "Patient/p"
    assert local_key("https://elsewhere.example/fhir/Patient/p", BASE) is None
    assert local_key(None, BASE) is None
    assert normalize(f"{BASE}/Patient/p", BASE) == "Patient/p"
    assert normalize("https://elsewhere.example/Patient/p", BASE) == (
        "https://elsewhere.example/Patient/p"
    )
    assert same_reference("Patient/p", "Patient/p")
    assert not same_reference(None, None)
    assert not same_reference("Patient/p", "Patient/q")


def test_npis_and_specialties_from_local_copies() -> None:
    assert npi_of(LOCAL["Practitioner/pcp"]) == "111"
    assert npi_of({"identifier": [{"system": "x", "value": "9"}]}) is None
    assert npi_of(None) is None
    assert specialties(LOCAL["PractitionerRole/pcp-role"]) == {"207Q00000X"}
    found = records({}, local=LOCAL)
    assert found.npi("PractitionerRole/pcp-role") == "111"  # the role's practitioner's
    assert found.npi("Practitioner/other") == "222"
    assert found.npi("Practitioner/unknown") is None
    assert found.practitioner(LOCAL["PractitionerRole/pcp-role"]) == LOCAL["Practitioner/pcp"]


def test_a_role_is_chosen_by_specialty_in_network_first() -> None:
    outside = Provider("PractitionerRole/a", frozenset({CARDIOLOGY}), in_network=False)
    inside = Provider("PractitionerRole/b", frozenset({CARDIOLOGY}), in_network=True)
    other = Provider("PractitionerRole/c", frozenset({"207X00000X"}), in_network=True)
    assert choose_role([outside, inside, other], frozenset({CARDIOLOGY})) == inside
    assert choose_role([outside], frozenset({CARDIOLOGY})) == outside
    assert choose_role([other], frozenset({CARDIOLOGY})) is None
    assert choose_role([outside, other], frozenset()) == other  # no specialty: any role


@pytest.mark.parametrize(
    ("wanted", "initial", "expected"),
    [
        (None, frozenset({"207Q00000X"}), (Care.PRIMARY, None)),
        (CARDIOLOGY, frozenset({"207Q00000X"}), (Care.PRIMARY, CARDIOLOGY)),
        (None, frozenset({CARDIOLOGY}), (Care.SPECIALIST, CARDIOLOGY)),
        ("207X00000X", frozenset({CARDIOLOGY}), (Care.SPECIALIST, "207X00000X")),
        ("207Q00000X", None, (Care.PRIMARY, "207Q00000X")),
        (CARDIOLOGY, None, (Care.SPECIALIST, CARDIOLOGY)),
        (None, None, (None, None)),
    ],
)
def test_the_kind_of_care(
    wanted: str | None, initial: frozenset[str] | None, expected: tuple[Care | None, str | None]
) -> None:
    request = {"performerType": {"coding": [{"system": NUCC, "code": wanted}]}} if wanted else {}
    provider = Provider("PractitionerRole/i", initial) if initial is not None else None
    assert care_of(request, provider, PRIMARY) == expected


def test_a_representative_is_a_related_person_of_this_member() -> None:
    request = {
        "subject": {"reference": "Patient/p"},
        "contained": [
            {"resourceType": "RelatedPerson", "id": "rp", "patient": {"reference": "Patient/p"}},
            {"resourceType": "RelatedPerson", "id": "x", "patient": {"reference": "Patient/q"}},
        ],
    }
    found = records(request, local=LOCAL)
    assert found.represents_member("RelatedPerson/mother")
    assert found.represents_member("#rp")
    assert not found.represents_member("#x")
    assert not found.represents_member("RelatedPerson/unknown")


def test_the_plan_as_payor_in_its_forms() -> None:
    coverage = {
        "payor": [
            {"reference": "Organization/plan"},
            {"identifier": PLAN_ID},
            {"reference": f"{DIRECTORY}/Organization/elsewhere"},
            {"reference": "Organization/unknown"},
        ]
    }
    found = records({}, coverage=coverage, local=LOCAL)
    payors = payor_verdicts(
        found,
        plan_organization="Organization/plan",
        plan_identifiers=identifiers_of(LOCAL["Organization/plan"]),
        directory_url=DIRECTORY,
    )
    assert payors == [
        ("Organization/plan", "plan"),
        ("Coverage.payor.identifier", "plan"),
        (f"{DIRECTORY}/Organization/elsewhere", "ask-directory"),
        ("Organization/unknown", "other"),
    ]
    assert payors_as_named(payors, "Organization/plan") == (
        "Organization/plan",
        "Organization/plan",
        f"{DIRECTORY}/Organization/elsewhere",
        "Organization/unknown",
    )


def test_the_requester_is_the_pcp_by_reference_or_by_npi() -> None:
    patient = {"generalPractitioner": [{"reference": "PractitionerRole/pcp-role"}]}
    by_reference = records(
        {"requester": {"reference": "PractitionerRole/pcp-role"}}, patient=patient, local=LOCAL
    )
    by_npi = records({"requester": {"reference": "Practitioner/pcp"}}, patient=patient, local=LOCAL)
    someone = records(
        {"requester": {"reference": "Practitioner/other"}}, patient=patient, local=LOCAL
    )
    assert relations(by_reference).is_pcp and relations(by_npi).is_pcp
    assert not relations(someone).is_pcp
    assert relations(someone).kind == "professional"


def test_the_requester_is_the_initial_or_a_treating_provider() -> None:
    request = {
        "requester": {"reference": "Practitioner/other"},
        "supportingInfo": [],
    }
    treating = records(request, local=LOCAL, treating=(f"{BASE}/Practitioner/other",))
    assert relations(treating).is_treating
    assert not relations(records(request, local=LOCAL)).is_treating
    member = records({"requester": {"reference": "Patient/p"}}, treating=("Patient/p",))
    assert relations(member).kind == "member" and not relations(member).is_treating


def test_facts_without_the_directory_keep_what_the_request_settles() -> None:
    request = {
        "requester": {"reference": "Patient/p"},
        "subject": {"reference": "Patient/p"},
    }
    coverage = {"status": "active", "period": {"start": "2026-01-01", "end": "2026-12-31"}}
    found = records(request, coverage=coverage)
    relation = relations(found)
    base = base_facts(
        found,
        relation,
        now=NOW,
        plan_organization="Organization/plan",
        primary_care=PRIMARY,
        candidates_offered=3,
    )
    base["coverage_payors"] = ("Organization/plan",)
    offline = facts_from(base, relation, None)
    assert offline.requester_is_the_member and not offline.directory_available
    assert offline.coverage_status == "active" and offline.coverage_start is not None
    assert offline.care is None and offline.candidates_offered == 3
    initial = Provider("PractitionerRole/i", frozenset({CARDIOLOGY}))
    seen = DirectoryView(None, initial, None, None, Care.SPECIALIST, CARDIOLOGY, [initial], [])
    online = facts_from(base, relation, seen)
    assert online.directory_available and online.care is Care.SPECIALIST
    assert online.in_network == (initial,) and online.initial_provider == initial
