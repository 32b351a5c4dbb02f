"""What the metrics read from, and add to, the stored FHIR resources (pure builders and readers).

The store already holds receipt (Task.restriction.period.start), track (the ServiceRequest's
priority and reasons), and the decision (the ClaimResponse's review action, its `created`). Two
facts it did not hold are recorded here, as FHIR:

- an **extended decision time frame**: the Task carries the `decision-timeframe-extension`
  extension (reason, the original due date) and its `restriction.period.end` is the new due date;
- an **appeal outcome**: a Task with code `appeal` (CodeSystem `pa-event`), `basedOn` the
  request's Task, `focus` its ClaimResponse, `businessStatus` `upheld` or `overturned`, and
  `executionPeriod.end` when the plan decided the appeal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from fhir_adapter.codes import (
    CANONICAL,
    ReviewAction,
    review_action_codes,
)
from fhir_adapter.errors import InvalidRequestError, UnprocessableEntityError
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.metrics.core import AppealOutcome
from fhir_adapter.workflow.deadlines import Track

EVENT_SYSTEM = f"{CANONICAL}/CodeSystem/pa-event"
TIMEFRAME_EXTENSION = f"{CANONICAL}/StructureDefinition/decision-timeframe-extension"
APPEAL_CODE = "appeal"
# regulatory.md §4.1: the conservative reading, at most 14 calendar days beyond the time frame.
MAX_EXTENSION = timedelta(days=14)


class ExtensionReason(StrEnum):
    """42 CFR 438.210(d)(1)(i)-(ii), regulatory.md §6: the only grounds for an extension."""

    MEMBER_REQUEST = "member-request"
    PROVIDER_REQUEST = "provider-request"
    NEED_INFORMATION = "need-information"  # the plan needs information, in the member's interest


EVENT_CODES = frozenset(
    {APPEAL_CODE} | {o.value for o in AppealOutcome} | {r.value for r in ExtensionReason}
)


def review_action(claim_response: dict[str, Any]) -> ReviewAction | None:
    """The X12 review action (NA, A1, A3, A4) of the ClaimResponse's first item, if one we know."""
    for part in review_action_codes(claim_response)[:1]:
        for coding in (part.get("valueCodeableConcept") or {}).get("coding") or []:
            try:
                return ReviewAction(coding.get("code"))
            except ValueError:
                return None
    return None


def timeframe_extension(task: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (e for e in task.get("extension") or [] if e.get("url") == TIMEFRAME_EXTENSION), None
    )


def extend_timeframe(
    task: dict[str, Any],
    *,
    reason: ExtensionReason,
    until: datetime,
    received: datetime,
    track: Track,
    now: datetime,
) -> dict[str, Any]:
    """A copy of the Task with its decision time frame extended to `until`.

    Raises ValueError naming the rule broken: one extension per request, later than the current
    due date, not in the past, and at most 14 days beyond the original time frame.
    """
    if timeframe_extension(task) is not None:
        raise ValueError("the decision time frame of this request was extended already")
    period = (task.get("restriction") or {}).get("period") or {}
    due_text = period.get("end")
    if not isinstance(due_text, str):
        raise ValueError("the request has no due date (Task.restriction.period.end)")
    due = datetime.fromisoformat(due_text)
    if until.tzinfo is None:
        raise ValueError("the new due date needs a time zone")
    if until <= max(due, now):
        raise ValueError(f"the new due date must be after the current one ({due_text}) and now")
    if until > due + MAX_EXTENSION:
        raise ValueError(
            f"an extension adds at most {MAX_EXTENSION.days} days to the time frame "
            f"(due {due_text}, received {format_instant(received)}, {track.value} track)"
        )
    extended = dict(task)
    extended["extension"] = [
        *(task.get("extension") or []),
        {
            "url": TIMEFRAME_EXTENSION,
            "extension": [
                {"url": "reason", "valueCoding": {"system": EVENT_SYSTEM, "code": reason.value}},
                {"url": "originalDue", "valueDateTime": due_text},
                {"url": "recorded", "valueDateTime": format_instant(now)},
            ],
        },
    ]
    extended["restriction"] = {
        **(task.get("restriction") or {}),
        "period": {**period, "end": format_instant(until)},
    }
    return extended


def appeal_task(
    *,
    request_task: str,
    claim_response: str,
    patient: str | None,
    plan: str,
    outcome: AppealOutcome,
    decided_at: datetime,
    received_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The record of the plan's decision on an appeal of the denial in `claim_response`."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": EVENT_SYSTEM, "code": APPEAL_CODE}], "text": "appeal"},
        "businessStatus": {
            "coding": [{"system": EVENT_SYSTEM, "code": outcome.value}],
            "text": outcome.value,
        },
        "basedOn": [{"reference": request_task}],
        "focus": {"reference": claim_response},
        "owner": {"reference": plan},
        "authoredOn": format_instant(received_at or decided_at),
        "lastModified": format_instant(now),
        "executionPeriod": {
            **({"start": format_instant(received_at)} if received_at else {}),
            "end": format_instant(decided_at),
        },
    }
    if patient:
        task["for"] = {"reference": patient}
    return task


def appeal_of(task: dict[str, Any]) -> tuple[str, AppealOutcome, datetime] | None:
    """(the appealed request's Task reference, outcome, when decided) of an appeal Task."""
    codes = {(c.get("system"), c.get("code")) for c in (task.get("code") or {}).get("coding") or []}
    if (EVENT_SYSTEM, APPEAL_CODE) not in codes:
        return None
    outcome = next(
        (
            AppealOutcome(c["code"])
            for c in (task.get("businessStatus") or {}).get("coding") or []
            if c.get("system") == EVENT_SYSTEM and c.get("code") in set(AppealOutcome)
        ),
        None,
    )
    based_on = next((b.get("reference") for b in task.get("basedOn") or []), None)
    decided = (task.get("executionPeriod") or {}).get("end")
    if outcome is None or not based_on or not isinstance(decided, str):
        return None
    return str(based_on), outcome, datetime.fromisoformat(decided)


@dataclass(frozen=True, slots=True)
class AppealRecord:
    outcome: AppealOutcome
    decided_at: datetime
    received_at: datetime | None


def parse_appeal(body: Any) -> AppealRecord:
    """`Task/{id}/$record-appeal` Parameters: `outcome` (code), `decidedAt`, `receivedAt`
    (dateTime, with a time zone); 400/422 naming the parameter at fault."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequestError(
            "$record-appeal takes a Parameters resource", expression="resourceType"
        )
    validate_resource(body)  # structure first: each value below is of its FHIR type

    def where(name: str) -> str:
        return f"Parameters.parameter.where(name='{name}')"

    def one(name: str, key: str) -> Any:
        values = [
            p.get(key)
            for p in body.get("parameter") or []
            if p.get("name") == name and p.get(key) is not None
        ]
        return values[0] if len(values) == 1 else None

    issues: list[Issue] = []
    outcome = one("outcome", "valueCode")
    if outcome not in {o.value for o in AppealOutcome}:
        issues.append(
            Issue(
                "required", f"{where('outcome')}: valueCode upheld or overturned", where("outcome")
            )
        )
    moments: dict[str, datetime | None] = {}
    for name, required in (("decidedAt", True), ("receivedAt", False)):
        text = one(name, "valueDateTime")
        moment = _instant(text)
        if (text is not None or required) and moment is None:
            issues.append(
                Issue(
                    "required" if text is None else "value",
                    f"{where(name)}: valueDateTime with a time and a time zone",
                    where(name),
                )
            )
        moments[name] = moment
    if issues:
        raise UnprocessableEntityError(issues=issues)
    decided = moments["decidedAt"]
    assert decided is not None
    return AppealRecord(AppealOutcome(outcome), decided, moments["receivedAt"])


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
