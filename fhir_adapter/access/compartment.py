"""The patient compartment: which resources belong to one member (FHIR R4 CompartmentDefinition
`patient`, narrowed to the types this server holds, plus Task by `for` as issue #5 asks).

A resource is in Patient/X's compartment when one of the listed search parameters references
Patient/X; the Patient itself is in its own compartment. Directory-like resources (SHARED) hold no
member's data and are readable under patient scopes, never writable.
"""

from __future__ import annotations

from typing import Any

from fhir_adapter.fhir.search_index import index_rows

PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Coverage": ("beneficiary", "subscriber"),
    "Condition": ("subject",),
    "RelatedPerson": ("patient",),
    "CareTeam": ("subject",),
    "ServiceRequest": ("subject",),
    "Task": ("subject",),  # Task.for
    "Claim": ("patient",),
    "ClaimResponse": ("patient",),
    "DiagnosticReport": ("subject",),
    "DocumentReference": ("subject",),
    "Communication": ("subject", "recipient", "sender"),
    "Provenance": ("patient",),
}
SHARED = frozenset({"Practitioner", "PractitionerRole", "Organization"})


def has_compartment(resource_type: str) -> bool:
    return resource_type == "Patient" or resource_type in PATIENT_COMPARTMENT


def other_patients(content: dict[str, Any], patient_id: str, *, base_url: str | None) -> set[str]:
    """The Patients other than Patient/`patient_id` whose compartments `content` is in too: a
    write for one member must not place anything in another member's record."""
    params = PATIENT_COMPARTMENT.get(str(content.get("resourceType")))
    if not params:
        return set()
    return {
        str(target_id)
        for param, target_type, target_id, url in index_rows(content, base_url=base_url).references
        if param in params and target_type == "Patient" and url is None and target_id != patient_id
    }


def compartment_patients(content: dict[str, Any], *, base_url: str | None) -> set[str]:
    """The ids of the Patients whose compartments `content` is in."""
    if content.get("resourceType") == "Patient":
        return {str(content["id"])} if content.get("id") else set()
    return other_patients(content, "", base_url=base_url)


def in_compartment(content: dict[str, Any], patient_id: str, *, base_url: str | None) -> bool:
    """Whether `content` belongs to Patient/`patient_id`."""
    resource_type = content.get("resourceType")
    if resource_type == "Patient":
        return content.get("id") == patient_id
    params = PATIENT_COMPARTMENT.get(str(resource_type))
    if not params:
        return False
    return any(
        param in params and target_type == "Patient" and target_id == patient_id and url is None
        for param, target_type, target_id, url in index_rows(content, base_url=base_url).references
    )
