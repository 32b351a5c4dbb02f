"""AuditEvent resources for the audit trail: who (client), what (interaction, resource), when,
outcome. Never clinical content, names or query strings, which can carry PHI.

Codes: type `rest` (audit-event-type), subtype from `restful-interaction`, action C/R/U/D/E and
outcome 0/4/8 as the R4 AuditEvent value sets define them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_adapter.codes import CLIENT_ID_SYSTEM
from fhir_adapter.fhir.dates import format_instant

_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_ACTION = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "search-type": "E",
    "create": "C",
    "update": "U",
    "transaction": "E",
    "operation": "E",
}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One request, as the API saw it."""

    interaction: str  # a restful-interaction code
    status: int
    recorded: datetime
    client_id: str | None  # None: no valid token
    address: str | None
    resource_type: str | None = None
    resource_id: str | None = None
    operation: str | None = None  # e.g. "$decide"
    patient: str | None = None  # the token's patient, for patient-scoped access


def outcome_code(status: int) -> str:
    """0 success, 4 minor failure (the request was refused), 8 serious failure (our fault)."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


def audit_event(record: AuditRecord) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": _RESTFUL, "code": record.interaction}],
        "action": _ACTION.get(record.interaction, "E"),
        "recorded": format_instant(record.recorded),
        "outcome": outcome_code(record.status),
        "outcomeDesc": f"HTTP {record.status}",
        "agent": [_client_agent(record)],
        "source": {
            "observer": {"display": "fhir-adapter"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "3",
                    "display": "Web Server",
                }
            ],
        },
    }
    entities = _entities(record)
    if entities:
        event["entity"] = entities
    return event


def _client_agent(record: AuditRecord) -> dict[str, Any]:
    """The API client that asked (or an unauthenticated caller), and from where."""
    agent: dict[str, Any] = {"requestor": True}
    if record.client_id:
        agent["altId"] = record.client_id  # searchable: AuditEvent?altid={client id}
        agent["who"] = {
            "identifier": {"system": CLIENT_ID_SYSTEM, "value": record.client_id},
            "display": f"client {record.client_id}",
        }
    else:
        agent["who"] = {"display": "unauthenticated caller"}
    if record.address:
        agent["network"] = {"address": record.address, "type": "2"}
    return agent


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    """What was touched: the resource (or its type), the operation, the token's patient."""
    entities: list[dict[str, Any]] = []
    if record.resource_type and record.resource_id:
        entities.append({"what": {"reference": f"{record.resource_type}/{record.resource_id}"}})
    elif record.resource_type:
        entities.append(
            {
                "what": {"display": record.resource_type},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
            }
        )
    if record.operation:
        entities.append({"what": {"display": record.operation}, "name": record.operation})
    if record.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
            }
        )
    return entities


# -- the review workspace (fhir_adapter/review/): staff members, not API clients, as agents -----

STAFF_SYSTEM = "https://fhir-adapter.org/fhir/sid/staff"
_DICOM = "http://dicom.nema.org/resources/ontology/DCM"
_SIGN_IN_OUT = {"sign-in": ("110122", "Login"), "sign-out": ("110123", "Logout")}
_STAFF_ACTION = {"decide": "U", "sign-in": "E", "sign-out": "E"}


@dataclass(frozen=True, slots=True)
class StaffAuditRecord:
    """One page view, decision or sign-in of the review workspace."""

    action: str  # view-queue, view-request, view-notice, view-numbers, decide, sign-in, sign-out
    status: int
    recorded: datetime
    staff: str | None  # the staff member's account name; None: not signed in
    role: str | None
    address: str | None
    entity: str | None = None  # e.g. "Task/123", "Communication/456"


def staff_audit_event(record: StaffAuditRecord) -> dict[str, Any]:
    agent: dict[str, Any] = {"requestor": True}
    if record.staff:
        agent["altId"] = record.staff
        agent["who"] = {
            "identifier": {"system": STAFF_SYSTEM, "value": record.staff},
            "display": f"staff {record.staff}",
        }
        if record.role:
            agent["role"] = [{"text": record.role}]
    else:
        agent["who"] = {"display": "unauthenticated caller"}
    if record.address:
        agent["network"] = {"address": record.address, "type": "2"}
    if record.action in _SIGN_IN_OUT:
        code, display = _SIGN_IN_OUT[record.action]
        kind = {"system": _DICOM, "code": "110114", "display": "User Authentication"}
        subtype = {"system": _DICOM, "code": code, "display": display}
    else:
        kind = {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        }
        interaction = "operation" if record.action == "decide" else "read"
        subtype = {"system": _RESTFUL, "code": interaction}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": kind,
        "subtype": [subtype],
        "action": _STAFF_ACTION.get(record.action, "R"),
        "recorded": format_instant(record.recorded),
        "outcome": outcome_code(record.status),
        "outcomeDesc": f"review workspace: {record.action}, HTTP {record.status}",
        "agent": [agent],
        "source": {
            "observer": {"display": "fhir-adapter review workspace"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "3",
                    "display": "Web Server",
                }
            ],
        },
    }
    if record.entity:
        event["entity"] = [{"what": {"reference": record.entity}}]
    return event
