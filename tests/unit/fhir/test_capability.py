"""The CapabilityStatement says what the server supports, generated from the registry."""

from fhir_adapter.fhir.capability import capability_statement
from fhir_adapter.fhir.resources import SERVED_TYPES, model_class


def test_capability_statement_is_valid_r4_and_complete() -> None:
    statement = capability_statement(
        "http://adapter.example/fhir", published="2026-11-27T00:00:00Z"
    )
    model_class("CapabilityStatement").model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert [r["type"] for r in rest["resource"]] == [*SERVED_TYPES, "MeasureReport"]
    # computed, never stored: the metrics operation and no interaction
    assert rest["resource"][-1] == {
        "type": "MeasureReport",
        "operation": [
            {
                "name": "pa-metrics",
                "definition": "https://fhir-adapter.org/fhir/OperationDefinition/MeasureReport-pa-metrics",
            }
        ],
    }
    task = next(r for r in rest["resource"] if r["type"] == "Task")
    names = {p["name"] for p in task["searchParam"]}
    assert {
        "_id",
        "_lastUpdated",
        "identifier",
        "status",
        "business-status",
        "patient",
        "focus",
        "owner",
        "requester",
        "authored-on",
        "period",
    } <= names
    assert "Task:focus" in task["searchInclude"]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}


def test_capability_lists_the_subscription_topics_it_is_given() -> None:
    topics = ("https://example.org/topic/a", "https://example.org/topic/b")
    statement = capability_statement(
        "http://adapter.example/fhir", published="2026-11-27T00:00:00Z", topics=topics
    )
    (subscription,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert [e["valueCanonical"] for e in subscription["extension"]] == list(topics)
