"""FHIR element helpers: resource keys, references, identifiers, NPIs, specialties."""

from __future__ import annotations

import pytest

from fhir_adapter.codes import NPI, NUCC
from fhir_adapter.fhir.elements import (
    ResourceKey,
    codes_in,
    display_name,
    identifier_value,
    local_key,
    npi_of,
    reference_of,
    reference_type,
    specialties,
    specialty_names,
    specialty_search,
)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Patient/p1", ResourceKey("Patient", "p1")),
        ("Task/t-1/_history/3", ResourceKey("Task", "t-1")),
        ("http://adapter.example/fhir/ServiceRequest/sr.1", ResourceKey("ServiceRequest", "sr.1")),
    ],
)
def test_resource_key_parses_and_prints_type_slash_id(text: str, key: ResourceKey) -> None:
    parsed = ResourceKey.parse(text)
    assert parsed == key
    assert str(parsed) == f"{key.type}/{key.id}"
    assert f"{parsed}" == str(parsed)
    resource_type, id = parsed  # unpacks for tx.resources.read(*key)
    assert (resource_type, id) == (key.type, key.id)


@pytest.mark.parametrize("text", ["", "Patient", "/p1", "Patient/"])
def test_resource_key_refuses_what_is_not_a_key(text: str) -> None:
    with pytest.raises(ValueError, match="not a Type/id"):
        ResourceKey.parse(text)


def test_resource_key_of_a_resource() -> None:
    assert ResourceKey.of({"resourceType": "Coverage", "id": "c1"}) == ResourceKey("Coverage", "c1")


def test_local_key_only_for_references_to_this_server() -> None:
    base = "http://adapter.example/fhir"
    assert local_key("Patient/p1", base) == ResourceKey("Patient", "p1")
    assert local_key(f"{base}/Patient/p1", base) == ResourceKey("Patient", "p1")
    assert local_key("http://directory.example/fhir/PractitionerRole/r1", base) is None
    assert local_key("urn:uuid:0f7c", base) is None
    assert local_key(None, base) is None


def test_references_and_their_type() -> None:
    assert reference_of({"reference": "Patient/p1"}) == "Patient/p1"
    assert reference_of("Patient/p1") is None
    assert reference_type("Patient/p1") == "Patient"
    assert reference_type("http://x.example/fhir/PractitionerRole/r") == "PractitionerRole"
    assert reference_type("PractitionerRole?identifier=x") is None
    assert reference_type(None) is None


def test_identifiers_and_npis() -> None:
    practitioner = {
        "identifier": [
            {"system": "urn:other", "value": "x"},
            {"system": NPI, "value": "1234567893"},
        ]
    }
    assert npi_of(practitioner) == "1234567893"
    assert identifier_value(practitioner, "urn:other") == "x"
    assert npi_of({"identifier": [{"system": NPI}]}) is None
    assert npi_of(None) is None


def test_specialties_and_codes() -> None:
    role = {
        "specialty": [
            {"coding": [{"system": NUCC, "code": "207X00000X", "display": "Orthopaedic Surgery"}]},
            {"coding": [{"system": "urn:other", "code": "zzz"}, {"code": "207Q00000X"}]},
        ]
    }
    assert specialties(role) == frozenset({"207X00000X"})
    assert specialty_names(role) == ("Orthopaedic Surgery",)
    assert codes_in(role["specialty"], NUCC, unsystemed=True) == ["207X00000X", "207Q00000X"]
    assert codes_in(role["specialty"], None) == ["207X00000X", "zzz", "207Q00000X"]
    assert codes_in({"coding": [{"system": NUCC, "code": "a"}]}, NUCC) == ["a"]
    assert specialty_search(["b", "a", "b"]) == f"{NUCC}|a,{NUCC}|b"


def test_display_name() -> None:
    assert display_name({"name": [{"text": "Dr. Ada Okafor"}]}) == "Dr. Ada Okafor"
    assert display_name({"name": [{"prefix": ["Dr."], "given": ["Ada"], "family": "Okafor"}]}) == (
        "Dr. Ada Okafor"
    )
    assert display_name({}) is None
