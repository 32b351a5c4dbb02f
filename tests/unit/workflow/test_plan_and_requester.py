"""The plan named in its four forms, and what the request says about who asked (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.workflow.plan import identifiers_of, payor_verdict, plan_references
from fhir_adapter.workflow.requester import (
    address_position,
    preferred_language,
    related_person_patient,
    requester_kind,
    treating_references,
)

BASE = "https://adapter.example/fhir"
DIRECTORY = "https://directory.example/fhir"
PLAN_ID = {"system": "https://plan.example/payer-id", "value": "PLAN"}
PLAN = {"resourceType": "Organization", "identifier": [PLAN_ID]}
COPY = {"resourceType": "Organization", "identifier": [PLAN_ID]}
OTHER = {"resourceType": "Organization", "identifier": [{"system": "x", "value": "OTHER"}]}


def verdict(payor: dict[str, Any]) -> str:
    local = {"Organization/copy": COPY, "Organization/other": OTHER, "#plan": COPY}
    return payor_verdict(
        payor,
        plan_names=plan_references("Organization/plan", base_url=BASE, directory_url=DIRECTORY),
        plan_identifiers=identifiers_of(PLAN),
        resolve=local.get,
        directory_url=DIRECTORY,
    )


@pytest.mark.parametrize(
    ("payor", "expected"),
    [
        ({"reference": "Organization/plan"}, "plan"),
        ({"reference": f"{BASE}/Organization/plan"}, "plan"),
        ({"reference": f"{DIRECTORY}/Organization/plan"}, "plan"),
        ({"identifier": PLAN_ID}, "plan"),
        ({"reference": "Organization/copy"}, "plan"),
        ({"reference": "#plan"}, "plan"),
        ({"reference": "Organization/other"}, "other"),
        ({"identifier": {"value": "PLAN"}}, "other"),  # a bare value could be anybody's
        ({"reference": "https://elsewhere.example/fhir/Organization/plan"}, "other"),
        ({"reference": f"{DIRECTORY}/Organization/another"}, "ask-directory"),
    ],
)
def test_payor_forms(payor: dict[str, Any], expected: str) -> None:
    assert verdict(payor) == expected


def test_requester_kinds() -> None:
    assert requester_kind("Patient/p") == "member"
    assert requester_kind("PractitionerRole/r") == "professional"
    assert requester_kind("https://dir.example/fhir/Practitioner/x") == "professional"
    assert requester_kind("RelatedPerson/rp") == "representative"
    assert requester_kind("Organization/o") == "other"


def test_representative_and_treating_evidence() -> None:
    assert related_person_patient({"patient": {"reference": "Patient/p"}}) == "Patient/p"
    assert related_person_patient({"active": False, "patient": {"reference": "Patient/p"}}) is None
    teams = [
        {"status": "active", "participant": [{"member": {"reference": "PractitionerRole/a"}}]},
        {"status": "inactive", "participant": [{"member": {"reference": "PractitionerRole/b"}}]},
    ]
    conditions = [{"asserter": {"reference": "Practitioner/c"}}]
    assert treating_references(teams, conditions) == ["PractitionerRole/a", "Practitioner/c"]


def test_member_language_and_position() -> None:
    patient = {
        "communication": [
            {"language": {"coding": [{"code": "en"}]}},
            {"language": {"coding": [{"code": "es-MX"}]}, "preferred": True},
        ],
        "address": [
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                        "extension": [
                            {"url": "latitude", "valueDecimal": 34.05},
                            {"url": "longitude", "valueDecimal": -118.24},
                        ],
                    }
                ]
            }
        ],
    }
    assert preferred_language(patient) == "es-MX"
    assert address_position(patient) == (34.05, -118.24)
    assert preferred_language({}) is None and address_position({}) is None
