"""What the plan owns (issue #16): the decisions and the record of them. Clients change these only
through the workflow operations ($submit, $decide, PAS update/cancel, reports); a REST write to
them is refused unless the caller is plan staff, and Provenance is never rewritten (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_adapter.codes import STATUS_SYSTEM
from fhir_adapter.workflow.letters import NOTICE_ID_SYSTEM
from fhir_adapter.workflow.pas import TRACE_SYSTEM
from fhir_adapter.workflow.reports import COMMUNICATION_ID_SYSTEM

# Only the plan issues these: every one of them is the plan's.
PLAN_TYPES = frozenset({"ClaimResponse", "Provenance"})
# Append-only: a version once written is never replaced, by anyone.
APPEND_ONLY = frozenset({"Provenance", "AuditEvent"})
# The parts of a decision Task the workflow moves; the rest is the requester's.
_TASK_DECISION = ("status", "businessStatus", "statusReason", "output", "restriction")
_PLAN_IDENTIFIERS = {
    "Claim": (TRACE_SYSTEM,),
    "Communication": (NOTICE_ID_SYSTEM, COMMUNICATION_ID_SYSTEM),
}


def _has_identifier(resource: Mapping[str, Any], systems: tuple[str, ...]) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") in systems for i in resource.get("identifier") or []
    )


def _is_decision_task(task: Mapping[str, Any]) -> bool:
    """A Task the workflow has taken in: its businessStatus is ours."""
    coding = (task.get("businessStatus") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("system") == STATUS_SYSTEM for c in coding)


def plan_owned_part(
    resource_type: str, current: Mapping[str, Any] | None, body: Mapping[str, Any]
) -> str | None:
    """What of the plan's this write would create or change (for the refusal's message), or None
    when it touches nothing the plan owns. `current` is the stored version (None: a create)."""
    if resource_type in PLAN_TYPES:
        return f"{resource_type} resources are the plan's record"
    systems = _PLAN_IDENTIFIERS.get(resource_type)
    if systems and any(_has_identifier(r, systems) for r in (body, current or {}) if r is not None):
        what = "Claims the plan files" if resource_type == "Claim" else "notices the plan sends"
        return f"{resource_type}: {what} are the plan's record"
    if resource_type == "Task":
        stored = current or {}
        if _is_decision_task(stored) or _is_decision_task(body):
            changed = [k for k in _TASK_DECISION if stored.get(k) != body.get(k)]
            if changed:
                return f"Task.{changed[0]} of a second-opinion Task is set by the plan's workflow"
    return None
