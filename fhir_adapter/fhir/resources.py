"""The only module that knows which FHIR model version we use.

fhir.resources defaults to R5; its `R4B` package is wire-compatible with R4 (4.0.1) for every
resource type we serve, so we import models from there and nowhere else.
"""

from __future__ import annotations

from functools import cache

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.resource import Resource
from fhir_core.constraints import FHIR_TYPES_MAPS

__all__ = [
    "FHIR_VERSION",
    "SERVED_TYPES",
    "Bundle",
    "CapabilityStatement",
    "OperationOutcome",
    "Resource",
    "is_known_type",
    "model_class",
]

FHIR_VERSION = "4.0.1"

# Resource types the REST surface serves (contract §2), in CapabilityStatement order.
SERVED_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Coverage",
    "Condition",
    "RelatedPerson",  # an authorized representative asking for the member (HSC 1383.15)
    "CareTeam",  # who treats the member: evidence for a professional's request
    "ServiceRequest",
    "Task",
    "Claim",
    "ClaimResponse",
    "DiagnosticReport",
    "DocumentReference",
    "Communication",
    "Subscription",
    "AuditEvent",
    "Provenance",
)


@cache
def model_class(resource_type: str) -> type[Resource]:
    """The pydantic model for `resource_type`; KeyError when FHIR has no such resource."""
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError) as exc:
        raise KeyError(resource_type) from exc
    if not issubclass(cls, Resource):
        raise KeyError(resource_type)
    direct_type_paths()  # the model's module may have registered types of its own
    return cls


def direct_type_paths() -> None:
    """Name each registered model `module:Class`, not `module.Class`.

    fhir_core finds the model of each embedded resource (every `Bundle.entry.resource`,
    `contained`) by that string through pydantic's `import_string`, which first imports the
    dotted path as a module and, when that fails, searches the path finders before trying
    `module:Class` (issue #13: a few percent of a submission's CPU, in every request). The
    colon form names the same class and is found in `sys.modules` at once."""
    for key, path in FHIR_TYPES_MAPS.items():
        if ":" not in path and "." in path:
            module, _, name = path.rpartition(".")
            FHIR_TYPES_MAPS[key] = f"{module}:{name}"


direct_type_paths()


def is_known_type(resource_type: str) -> bool:
    """True when `resource_type` names a FHIR resource (served by us or not)."""
    if not resource_type or not resource_type[0].isupper() or not resource_type.isalnum():
        return False
    try:
        model_class(resource_type)
    except KeyError:
        return False
    return True
