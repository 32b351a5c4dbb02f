"""Reading and rewriting references."""

import pytest

from fhir_adapter.fhir.references import iter_references, parse_reference, rewrite_references

BASE = "http://adapter.example/fhir"


@pytest.mark.parametrize(
    ("raw", "kind", "key"),
    [
        ("Patient/123", "local", "Patient/123"),
        ("Patient/123/_history/2", "local", "Patient/123"),
        (f"{BASE}/Patient/123", "local", "Patient/123"),
        ("http://directory.example/fhir/PractitionerRole/9", "absolute", None),
        ("urn:uuid:6f1f5d4a-0000-4000-8000-000000000001", "urn", None),
        ("#cond1", "contained", None),
        ("Patient?identifier=urn:x|1", "conditional", None),
        ("not a reference", "other", None),
    ],
)
def test_parse_reference_classifies(raw: str, kind: str, key: str | None) -> None:
    ref = parse_reference(raw, base_url=BASE)
    assert ref.kind == kind
    assert ref.local_key == key


def test_iter_references_reports_fhirpath_of_each() -> None:
    task = {
        "resourceType": "Task",
        "for": {"reference": "Patient/1"},
        "input": [{"valueReference": {"reference": "Condition/2"}}],
        "owner": {"display": "no reference here"},
    }
    found = sorted(path for path, _ in iter_references(task, "Task"))
    assert found == ["Task.for", "Task.input[0].valueReference"]


def test_rewrite_replaces_only_exact_fullurls_and_copies() -> None:
    urn = "urn:uuid:6f1f5d4a-0000-4000-8000-000000000001"
    resource = {
        "subject": {"reference": urn},
        "note": [{"text": f"mentions {urn} in free text"}],
        "text": {"div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{urn}">x</a></div>'},
    }
    rewritten = rewrite_references(resource, {urn: "Patient/abc"})
    assert rewritten["subject"]["reference"] == "Patient/abc"
    assert rewritten["note"][0]["text"] == f"mentions {urn} in free text"
    assert 'href="Patient/abc"' in rewritten["text"]["div"]
    assert resource["subject"]["reference"] == urn  # the input is left alone
