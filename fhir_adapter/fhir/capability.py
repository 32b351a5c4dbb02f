"""The CapabilityStatement, generated from what the server really supports (pure)."""

from __future__ import annotations

from typing import Any

from fhir_adapter import __version__
from fhir_adapter.fhir.resources import FHIR_VERSION, SERVED_TYPES
from fhir_adapter.fhir.search import SEARCH_PARAMS, params_for
from fhir_adapter.workflow.subscriptions import TOPICS as SUBSCRIPTION_TOPICS

_SEARCH_TYPE = {"id": "token", "last-updated": "date"}
_INTERACTIONS = ("read", "vread", "update", "history-instance", "create", "search-type")


# Operations the REST surface offers: resource type -> (name, OperationDefinition canonical).
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "Claim": (("submit", "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"),),
    "Task": (("decide", "https://fhir-adapter.org/fhir/OperationDefinition/Task-decide"),),
    "Subscription": (
        (
            "status",
            "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
        ),
        (
            "events",
            "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
        ),
    ),
}
TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)
TOPICS = tuple(SUBSCRIPTION_TOPICS)
PROFILES: dict[str, tuple[str, ...]] = {
    "ServiceRequest": (
        "https://fhir-adapter.org/fhir/StructureDefinition/second-opinion-servicerequest",
    ),
    "Task": ("https://fhir-adapter.org/fhir/StructureDefinition/second-opinion-task",),
    "Claim": ("https://fhir-adapter.org/fhir/StructureDefinition/second-opinion-claim",),
    "ClaimResponse": (
        "https://fhir-adapter.org/fhir/StructureDefinition/second-opinion-claimresponse",
    ),
}


def capability_statement(base_url: str, *, published: str) -> dict[str, Any]:
    """What `GET /fhir/metadata` answers: resources, interactions, search parameters, includes."""
    resources = []
    for resource_type in SERVED_TYPES:
        params = params_for(resource_type)
        references = [p.name for p in SEARCH_PARAMS.get(resource_type, ()) if p.type == "reference"]
        extra: dict[str, Any] = {}
        if resource_type in PROFILES:
            extra["supportedProfile"] = list(PROFILES[resource_type])
        if resource_type == "Subscription":
            extra["extension"] = [
                {"url": TOPIC_CANONICAL, "valueCanonical": topic} for topic in TOPICS
            ]
        if resource_type in OPERATIONS:
            extra["operation"] = [
                {"name": n, "definition": d} for n, d in OPERATIONS[resource_type]
            ]
        resources.append(
            {
                "type": resource_type,
                **extra,
                "interaction": [{"code": code} for code in _INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": True,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": False,
                "conditionalDelete": "not-supported",
                "searchInclude": [f"{resource_type}:{name}" for name in references],
                "searchParam": [
                    {
                        "name": p.name,
                        "type": _SEARCH_TYPE.get(p.type, p.type),
                        **({"documentation": p.documentation} if p.documentation else {}),
                    }
                    for p in params.values()
                ],
            }
        )
    return {
        "resourceType": "CapabilityStatement",
        "id": "fhir-adapter",
        "status": "active",
        "date": published,
        "publisher": "fhir-adapter",
        "kind": "instance",
        "software": {"name": "fhir-adapter", "version": __version__},
        "implementation": {"description": "Second Medical Opinion FHIR adapter", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }
