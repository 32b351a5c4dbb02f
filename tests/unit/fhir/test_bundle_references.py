"""R4 "Resolving references in Bundles" (bundle.html#references), as the pure resolver applies it."""

from __future__ import annotations

from typing import Any

from fhir_adapter.fhir.bundle_references import (
    duplicate_fullurl_issues,
    resolve_bundle_references,
    rewrite_entry_references,
)

SERVER = "https://adapter.example/fhir"
EHR = "https://ehr.example.org/fhir"


def sr(**refs: str) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", **{k: {"reference": v} for k, v in refs.items()}}


def test_a_relative_reference_resolves_against_the_base_of_the_entry_holding_it() -> None:
    entries = [
        (f"{EHR}/ServiceRequest/1", sr(subject="Patient/p")),
        (f"{EHR}/Patient/p", {"resourceType": "Patient"}),
        ("https://other.example/fhir/Patient/p", {"resourceType": "Patient"}),
    ]
    resolved = resolve_bundle_references(entries, server_base=SERVER)
    assert resolved.target(0, "Patient/p") == 1  # not the other server's Patient/p
    assert not resolved.issues


def test_absolute_urn_and_versioned_references_match_full_urls() -> None:
    entries = [
        ("urn:uuid:a", sr(subject="urn:uuid:b", performer=f"{EHR}/Practitioner/x/_history/2")),
        ("urn:uuid:b", {"resourceType": "Patient"}),
        (f"{EHR}/Practitioner/x", {"resourceType": "Practitioner"}),
        ("urn:oid:1.2.3", sr(subject="urn:uuid:b")),
    ]
    resolved = resolve_bundle_references(entries, server_base=SERVER)
    assert resolved.target(0, "urn:uuid:b") == 1
    assert resolved.target(0, f"{EHR}/Practitioner/x/_history/2") == 2
    assert resolved.target(3, "urn:uuid:b") == 1


def test_a_relative_reference_in_a_urn_entry_resolves_against_this_server() -> None:
    entries = [
        ("urn:uuid:a", sr(subject="Patient/p")),
        (f"{SERVER}/Patient/p", {"resourceType": "Patient"}),
    ]
    assert resolve_bundle_references(entries, server_base=SERVER).target(0, "Patient/p") == 1


def test_contained_and_outside_references_are_left_alone() -> None:
    entries = [("urn:uuid:a", sr(subject="#p", performer="Practitioner/stored"))]
    resolved = resolve_bundle_references(entries, server_base=SERVER)
    assert resolved.targets == {} and resolved.issues == ()


def test_ambiguous_and_unresolvable_references_name_the_entry_and_element() -> None:
    entries = [
        ("urn:uuid:a", sr(subject="urn:uuid:twin", requester="urn:uuid:nobody")),
        ("urn:uuid:twin", {"resourceType": "Patient"}),
        ("urn:uuid:twin", {"resourceType": "Patient"}),
    ]
    resolved = resolve_bundle_references(entries, server_base=SERVER)
    expressions = {i.expression for i in resolved.issues}
    assert expressions == {
        "Bundle.entry[0].resource.subject.reference",
        "Bundle.entry[0].resource.requester.reference",
    }
    duplicates = duplicate_fullurl_issues([e[0] for e in entries])
    assert [i.expression for i in duplicates] == ["Bundle.entry[2].fullUrl"]


def test_rewriting_names_the_stored_key_of_the_entry_resolved_to() -> None:
    entries = [
        (f"{EHR}/ServiceRequest/1", sr(subject="Patient/p", performer="Practitioner/elsewhere")),
        (f"{EHR}/Patient/p", {"resourceType": "Patient"}),
    ]
    resolved = resolve_bundle_references(entries, server_base=SERVER)
    rewritten = rewrite_entry_references(entries[0][1], 0, resolved, {1: "Patient/new-id"})
    assert rewritten["subject"] == {"reference": "Patient/new-id"}
    assert rewritten["performer"] == {"reference": "Practitioner/elsewhere"}
