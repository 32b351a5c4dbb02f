"""A NoticeContext as JSON and back (pure): the render job stores the letter exactly as the
decision wrote it, so the worker prints what was decided, not what the resources say later."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

from fhir_adapter.codes import DenialReason
from fhir_adapter.notices.contacts import RightsContacts
from fhir_adapter.notices.model import NoticeContext, NoticeProvider, PlanContact
from fhir_adapter.notices.render import RenderedNotice, render
from fhir_adapter.policy.decision import Outcome

_DATES = ("notice_date", "authorization_valid_until", "mailing_date", "report_date")


def context_to_json(context: NoticeContext) -> dict[str, Any]:
    """Every field of the letter, as JSON values (dates as ISO strings, enums as their values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(context):
        value = getattr(context, f.name)
        if isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, Outcome | DenialReason):
            value = value.value
        elif f.name in ("plan", "rights"):
            value = dataclasses.asdict(value)
        elif f.name == "providers":
            value = [dataclasses.asdict(p) for p in value]
        elif f.name == "taglines" and value is not None:
            value = dict(value)
        out[f.name] = value
    return out


def context_from_json(data: dict[str, Any]) -> NoticeContext:
    """The NoticeContext `context_to_json` wrote (its checks run again)."""
    fields = dict(data)
    for name in _DATES:
        if fields.get(name):
            fields[name] = date.fromisoformat(fields[name])
    fields["outcome"] = Outcome(fields["outcome"])
    if fields.get("denial_reason"):
        fields["denial_reason"] = DenialReason(fields["denial_reason"])
    fields["plan"] = PlanContact(
        **{**fields["plan"], "address_lines": tuple(fields["plan"]["address_lines"])}
    )
    fields["rights"] = RightsContacts(
        **{**fields["rights"], "hearing_address": tuple(fields["rights"]["hearing_address"])}
    )
    fields["providers"] = tuple(
        NoticeProvider(**{**p, "address": tuple(p["address"])}) for p in fields["providers"]
    )
    return NoticeContext(**fields)


def render_stored(letter: dict[str, Any]) -> RenderedNotice:
    """Render a stored letter: a plain function of JSON, so a worker thread or process runs it."""
    return render(context_from_json(letter))
