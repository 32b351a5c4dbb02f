"""The CapabilityStatement, generated from what the server really supports (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_adapter import __version__
from fhir_adapter.fhir.resources import FHIR_VERSION, SERVED_TYPES
from fhir_adapter.fhir.search_parameters import SEARCH_PARAMS, params_for

_SEARCH_TYPE = {"id": "token", "last-updated": "date"}
_INTERACTIONS = ("read", "vread", "update", "history-instance", "create", "search-type")


# Operations the REST surface offers: resource type -> (name, OperationDefinition canonical).
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    # Da Vinci PAS's operations, as defined here (base: the PAS IG's Claim-submit, Claim-inquiry)
    "Claim": (
        ("submit", "https://fhir-adapter.org/fhir/OperationDefinition/Claim-submit"),
        ("inquire", "https://fhir-adapter.org/fhir/OperationDefinition/Claim-inquire"),
    ),
    "Task": (
        ("decide", "https://fhir-adapter.org/fhir/OperationDefinition/Task-decide"),
        ("record-appeal", "https://fhir-adapter.org/fhir/OperationDefinition/Task-record-appeal"),
    ),
    # CMS-0057-F metrics; MeasureReport is not stored, only computed (no interactions)
    "MeasureReport": (
        (
            "pa-metrics",
            "https://fhir-adapter.org/fhir/OperationDefinition/MeasureReport-pa-metrics",
        ),
    ),
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


def capability_statement(
    base_url: str,
    *,
    published: str,
    topics: Iterable[str] = (),
    token_endpoint: str | None = None,
    cors: bool = False,
) -> dict[str, Any]:
    """What `GET /fhir/metadata` answers: resources, interactions, search parameters, includes,
    the Subscription `topics` the workflow offers, and how to get access (SMART Backend Services,
    the token endpoint)."""
    resources = [_resource(resource_type, topics) for resource_type in SERVED_TYPES]
    resources += [
        {"type": t, "operation": [{"name": n, "definition": d} for n, d in operations]}
        for t, operations in OPERATIONS.items()
        if t not in SERVED_TYPES
    ]
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
                "security": _security(token_endpoint, cors),
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }


_READ_ONLY = ("read", "vread", "history-instance", "search-type")


def _resource(resource_type: str, topics: Iterable[str]) -> dict[str, Any]:
    """One served type's entry: its profiles, interactions, operations, search parameters."""
    params = params_for(resource_type)
    references = [p.name for p in SEARCH_PARAMS.get(resource_type, ()) if p.type == "reference"]
    extra: dict[str, Any] = {}
    if resource_type in PROFILES:
        extra["supportedProfile"] = list(PROFILES[resource_type])
    if resource_type == "Subscription":
        extra["extension"] = [{"url": TOPIC_CANONICAL, "valueCanonical": topic} for topic in topics]
    if resource_type in OPERATIONS:
        extra["operation"] = [{"name": n, "definition": d} for n, d in OPERATIONS[resource_type]]
    return {
        "type": resource_type,
        **extra,
        "interaction": [
            {"code": code}
            for code in _INTERACTIONS
            if resource_type != "AuditEvent" or code in _READ_ONLY
        ],
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


def _security(token_endpoint: str | None, cors: bool) -> dict[str, Any]:
    security: dict[str, Any] = {
        "cors": cors,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": (
            "OAuth 2.0 bearer tokens (SMART Backend Services, client credentials with a signed "
            "client assertion) on every endpoint but metadata and smart-configuration; SMART v1 "
            "and v2 system/ and patient/ scopes; see .well-known/smart-configuration."
        ),
    }
    if token_endpoint:
        security["extension"] = [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token_endpoint}],
            }
        ]
    return security
