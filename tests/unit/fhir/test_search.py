"""Search parameters: index extraction and query parsing."""

from datetime import UTC, datetime

import pytest

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.search import (
    DateCriterion,
    ReferenceCriterion,
    StringCriterion,
    TokenCriterion,
    parse_search,
)
from fhir_adapter.fhir.search_index import index_rows

BASE = "http://adapter.example/fhir"


def parse(resource_type: str, *params: tuple[str, str], strict: bool = False):
    return parse_search(
        resource_type, params, base_url=BASE, default_count=50, max_count=500, strict=strict
    )


def test_task_index_rows() -> None:
    task = {
        "resourceType": "Task",
        "id": "t1",
        "status": "received",
        "identifier": [{"system": "urn:req", "value": "R-1"}],
        "businessStatus": {"coding": [{"system": "urn:bs", "code": "pending-review"}]},
        "for": {"reference": "Patient/p1"},
        "focus": {"reference": "http://directory.example/fhir/ServiceRequest/9"},
        "authoredOn": "2026-11-25T09:00:00-08:00",
        "executionPeriod": {"start": "2026-11-25T17:00:00Z"},
    }
    rows = index_rows(task, base_url=BASE)
    assert ("status", None, "received") in rows.tokens
    assert ("identifier", "urn:req", "R-1") in rows.tokens
    assert ("business-status", "urn:bs", "pending-review") in rows.tokens
    assert ("patient", "Patient", "p1", None) in rows.references
    assert ("subject", "Patient", "p1", None) in rows.references
    assert (
        "focus",
        "ServiceRequest",
        "9",
        "http://directory.example/fhir/ServiceRequest/9",
    ) in rows.references
    authored = next(d for d in rows.dates if d[0] == "authored-on")
    assert authored[1] == datetime(2026, 11, 25, 17, tzinfo=UTC)


def test_patient_param_only_indexes_patient_targets() -> None:
    request = {"resourceType": "ServiceRequest", "subject": {"reference": "Group/g1"}}
    rows = index_rows(request)
    assert [r[0] for r in rows.references] == ["subject"]


def test_string_index_is_case_and_accent_insensitive() -> None:
    rows = index_rows({"resourceType": "Patient", "name": [{"family": "Núñez", "given": ["José"]}]})
    assert ("family", "nunez") in rows.strings
    assert ("name", "jose") in rows.strings


def test_parse_tokens_references_dates_and_strings() -> None:
    query = parse(
        "Task",
        ("status", "requested,received"),
        ("identifier", "urn:req|R-1"),
        ("patient", "p1"),
        ("focus", f"{BASE}/ServiceRequest/s1"),
        ("authored-on", "ge2026-11-01"),
        ("_include", "Task:focus"),
        ("_count", "10"),
    )
    by_name = {f.param.name: f for f in query.filters}
    assert by_name["status"].criteria == (
        TokenCriterion("requested", None, False),
        TokenCriterion("received", None, False),
    )
    assert by_name["identifier"].criteria == (TokenCriterion("R-1", "urn:req", True),)
    assert by_name["patient"].criteria == (ReferenceCriterion("Patient", "p1", None),)
    assert by_name["focus"].criteria == (ReferenceCriterion("ServiceRequest", "s1", None),)
    criterion = by_name["authored-on"].criteria[0]
    assert isinstance(criterion, DateCriterion) and criterion.prefix == "ge"
    assert query.count == 10
    assert [i.param.name for i in query.includes] == ["focus"]
    assert ("_include", "Task:focus") in query.applied


def test_string_modifiers_and_escaped_commas() -> None:
    query = parse("Patient", ("family:exact", "O'Neil\\, Jr"))
    assert query.filters[0].criteria == (StringCriterion("o'neil, jr", "exact"),)


def test_count_is_capped() -> None:
    assert parse("Task", ("_count", "100000")).count == 500


def test_unknown_parameters_are_ignored_unless_strict() -> None:
    assert parse("Task", ("colour", "blue")).filters == ()
    with pytest.raises(InvalidRequestError, match="Unknown search parameter 'colour'"):
        parse("Task", ("colour", "blue"), strict=True)


@pytest.mark.parametrize(
    "param",
    [
        ("authored-on", "last tuesday"),
        ("_count", "-1"),
        ("status:contains", "x"),
        ("_include", "Task:status"),
        ("_include", "Patient:general-practitioner"),
        ("patient", "not a reference!"),
    ],
    ids=[
        "bad-date",
        "bad-count",
        "bad-modifier",
        "include-non-reference",
        "include-other-type",
        "bad-reference",
    ],
)
def test_bad_values_are_400(param: tuple[str, str]) -> None:
    with pytest.raises(InvalidRequestError):
        parse("Task", param)
