"""Provenance for what the adapter does on the plan's behalf: each decision (who decided, from
which request) and each delivery of a Communication (transmitted, or given up). Pure builders.

R4 Provenance: versioned `target`s, `recorded`, `activity`, `agent` (type from
provenance-participant-type), `entity` for what the activity used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir_adapter.codes import CLIENT_ID_SYSTEM
from fhir_adapter.fhir.dates import format_instant

_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"


def _agent(kind: str, who: str, on_behalf_of: str | None = None) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _PARTICIPANT, "code": kind}]},
        "who": {"reference": who},
    }
    if on_behalf_of and on_behalf_of != who:
        agent["onBehalfOf"] = {"reference": on_behalf_of}
    return agent


def decision_provenance(
    *,
    targets: list[str],
    request: str,
    plan: str,
    recorded: datetime,
    created: bool,
    reviewer: str | None = None,
) -> dict[str, Any]:
    """A decision recorded in `targets` (versioned `Type/id/_history/n`) about `request`: by the
    plan's rules, or by a `reviewer` for the plan."""
    provenance = record_provenance(
        targets=targets,
        plan=plan,
        recorded=recorded,
        created=created,
        activity="second-opinion decision",
    )
    if reviewer:
        provenance["agent"] = [_agent("verifier", reviewer, plan), *provenance["agent"]]
    provenance["entity"] = [{"role": "source", "what": {"reference": request}}]
    return provenance


def change_provenance(
    *,
    target: str,
    recorded: datetime,
    activity: str,
    plan: str | None = None,
    client_id: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Any other change to what the plan owns (issue #16): the workflow completing a Task on a
    report (`plan`), or plan staff writing over REST (`client_id`, the token's client)."""
    if client_id is not None:
        who: dict[str, Any] = {
            "type": {"coding": [{"system": _PARTICIPANT, "code": "author"}]},
            "who": {
                "identifier": {"system": CLIENT_ID_SYSTEM, "value": client_id},
                "display": f"client {client_id}",
            },
        }
    else:
        who = _agent("author", plan or "")
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": format_instant(recorded),
        "activity": {
            "coding": [{"system": _DATA_OPERATION, "code": "UPDATE"}],
            "text": activity,
        },
        "agent": [who],
    }
    if source:
        provenance["entity"] = [{"role": "source", "what": {"reference": source}}]
    return provenance


def delivery_provenance(
    *, communication: str, plan: str, recorded: datetime, delivered: bool
) -> dict[str, Any]:
    """The Communication (versioned) was transmitted to its recipient, or delivery was given up."""
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": communication}],
        "recorded": format_instant(recorded),
        "activity": {
            "coding": [{"system": _LIFECYCLE, "code": "transmit", "display": "Transmit"}],
            "text": "delivered" if delivered else "delivery failed for good",
        },
        "agent": [_agent("performer", plan)],
    }
    if not delivered:
        provenance["reason"] = [{"text": "delivery failed after the last retry"}]
    return provenance


def record_provenance(
    *, targets: list[str], plan: str, recorded: datetime, created: bool, activity: str
) -> dict[str, Any]:
    """A fact the plan recorded in the versioned `targets` (an appeal outcome, an extension)."""
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": format_instant(recorded),
        "activity": {
            "coding": [{"system": _DATA_OPERATION, "code": "CREATE" if created else "UPDATE"}],
            "text": activity,
        },
        "agent": [_agent("author", plan)],
    }
