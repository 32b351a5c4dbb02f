"""Structural validation: every problem named by its FHIRPath."""

import pytest

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.validation import json_depth, parse_json, validate_resource


def expressions(exc: InvalidRequestError) -> set[str | None]:
    return {issue.expression for issue in exc.issues}


def test_valid_resource_passes() -> None:
    assert validate_resource({"resourceType": "Patient", "gender": "female"}) == "Patient"


def test_every_problem_is_reported_with_its_element() -> None:
    task = {
        "resourceType": "Task",
        "status": "bogus",
        "intent": "order",
        "authoredOn": "yesterday",
        "colour": "blue",
        "input": [{"type": {"text": "x"}, "valueString": 3}],
    }
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource(task)
    assert expressions(caught.value) == {
        "Task.status",
        "Task.authoredOn",
        "Task.colour",
        "Task.input[0].valueString",
    }
    codes = {i.expression: i.code for i in caught.value.issues}
    assert codes["Task.status"] == "code-invalid"
    assert codes["Task.colour"] == "structure"


def test_missing_required_elements_are_named() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource({"resourceType": "Task"})
    assert expressions(caught.value) == {"Task.status", "Task.intent"}
    assert {i.code for i in caught.value.issues} == {"required"}


def test_bundle_entries_are_located_inside_the_bundle() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "x"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Task", "status": "nope", "intent": "order"},
                "request": {"method": "FETCH", "url": "Task"},
            },
        ],
    }
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource(bundle)
    assert expressions(caught.value) == {
        "Bundle.entry[1].resource.gender",
        "Bundle.entry[2].resource.status",
        "Bundle.entry[2].request.method",
    }


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ([], None),
        ({"name": "x"}, "resourceType"),
        ({"resourceType": "Spaceship"}, "resourceType"),
    ],
    ids=["not-an-object", "no-resource-type", "unknown-type"],
)
def test_not_a_resource(body: object, expression: str | None) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource(body)
    assert expressions(caught.value) == {expression}


def test_parse_json_reports_syntax_errors() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        parse_json(b'{"resourceType": "Patient",}', max_depth=50)


def test_parse_json_limits_depth() -> None:
    nested = b'{"a":' * 60 + b"1" + b"}" * 60
    assert parse_json(nested, max_depth=100)
    with pytest.raises(InvalidRequestError, match="deeper than the limit of 50"):
        parse_json(nested, max_depth=50)
    with pytest.raises(InvalidRequestError, match="deeper than the limit"):
        parse_json(b"[" * 5000 + b"]" * 5000, max_depth=50)


def test_json_depth_counts_levels() -> None:
    assert json_depth({"a": [{"b": 1}]}, stop_after=10) == 3
    assert json_depth(1, stop_after=10) == 1


def test_an_empty_array_is_400_naming_it() -> None:
    """R4 JSON leaves an element out rather than sending it empty: `[]` says nothing."""
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource({"resourceType": "Patient", "name": [], "telecom": [{"value": "1"}]})
    assert expressions(caught.value) == {"Patient.name"}
    with pytest.raises(InvalidRequestError) as caught:
        validate_resource(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {"resourceType": "Patient", "identifier": []},
                        "request": {"method": "POST", "url": "Patient"},
                    }
                ],
            }
        )
    assert expressions(caught.value) == {"Bundle.entry[0].resource.identifier"}
