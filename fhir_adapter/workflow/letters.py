"""The written notices a decision owes (policy V; 42 CFR 438.404; contract §4.5), as Communications
carrying the rendered letter as HTML and PDF (pure)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from fhir_adapter.codes import CANONICAL
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.notices import (
    DEFAULT_RIGHTS_CONTACTS,
    NoticeContext,
    NoticeProvider,
    PlanContact,
    RenderedNotice,
    RightsContacts,
    choose_notice_language,
    reason_sentence,
    wants_large_print,
)
from fhir_adapter.policy.decision import Decision, Outcome
from fhir_adapter.policy.facts import Provider
from fhir_adapter.workflow.pas import AUTHORIZATION_DAYS, authorization_number

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
NOTICE_ID_SYSTEM = f"{CANONICAL}/sid/notice"
NOTICE_FLAG_SYSTEM = f"{CANONICAL}/CodeSystem/notice-flag"
TRANSLATION_OWED = "translation-owed"
REQUESTED_LANGUAGE_URL = f"{CANONICAL}/StructureDefinition/notice-requested-language"
NOTICE_MAILING_URL = f"{CANONICAL}/StructureDefinition/notice-mailing"
NOTICE_MAILED_ON_URL = f"{CANONICAL}/StructureDefinition/notice-mailed-on"
_NOTIFICATION = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "notification",
        }
    ]
}


@dataclass(frozen=True, slots=True)
class Letter:
    """One notice to one recipient."""

    recipient: str  # Patient/… or the requesting professional's reference
    context: NoticeContext


def member_name(patient: Mapping[str, Any] | None) -> str:
    for name in (patient or {}).get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        if any(parts):
            return " ".join(p for p in parts if p)
    return "Member"


def member_id(patient: Mapping[str, Any] | None) -> str:
    """The member's plan id: the identifier typed MB (member number), else the first one."""
    identifiers = [i for i in (patient or {}).get("identifier") or [] if i.get("value")]
    for identifier in identifiers:
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding") or []}
        if "MB" in codes:
            return str(identifier["value"])
    return str(identifiers[0]["value"]) if identifiers else ""


def notice_provider(provider: Provider) -> NoticeProvider:
    """A directory provider as a letter lists it: name, specialty, organization, address, phone."""
    return NoticeProvider(
        display_name=provider.display or provider.role_reference.rsplit("/", 1)[-1],
        specialty=", ".join(provider.specialty_names),
        organization=provider.organization_name or "",
        phone=provider.phone,
        address=provider.address,
    )


def request_reference(request: Mapping[str, Any], fallback: str) -> str:
    for identifier in request.get("identifier") or []:
        if identifier.get("value"):
            return str(identifier["value"])
    return fallback


def letters_for(
    decision: Decision,
    *,
    task_id: str,
    request: Mapping[str, Any],
    request_key: str,
    patient: Mapping[str, Any] | None,
    patient_key: str,
    professional_requester: str | None,
    plan: PlanContact,
    expedited: bool,
    now: datetime,
    note: str | None = None,
    rights: RightsContacts = DEFAULT_RIGHTS_CONTACTS,
    taglines: Mapping[str, str] | None = None,
) -> list[Letter]:
    """Every denial: a notice to the member and a shorter one to the requester; every approval:
    the member and the requester are told which providers the member may see."""
    if not decision.outcome.is_final:
        return []
    denied = decision.outcome is Outcome.DENIED
    step = decision.deciding_rule
    providers = tuple(notice_provider(p) for p in decision.providers)
    member_language, requested = choose_notice_language(patient)
    out_of_network = decision.outcome is Outcome.APPROVED_OUT_OF_NETWORK
    audiences: list[tuple[str, str]] = [(patient_key, "member")]
    if professional_requester:
        audiences.append((professional_requester, "requester"))
    letters = []
    for recipient, audience in audiences:
        language = member_language if audience == "member" else "en"
        reason = ""
        if denied and decision.denial_reason:
            reason = reason_sentence(decision.denial_reason, language, audience)  # type: ignore[arg-type]
            if note:
                reason = f"{reason} {note}"
        context = NoticeContext(
            kind=f"{'denial' if denied else 'approval'}-{audience}",  # type: ignore[arg-type]
            language=language,
            outcome=decision.outcome,
            **_letter_fields(patient, request, request_key, plan, now, rights, taglines),
            denial_reason=decision.denial_reason,
            reason_text=reason,
            rule=step.rule if step else "",
            basis=step.basis if step else "",
            providers=() if denied else providers,
            authorization_number=authorization_number(task_id) if out_of_network else None,
            authorization_valid_until=(now + timedelta(days=AUTHORIZATION_DAYS)).date()
            if out_of_network
            else None,
            expedited=expedited,
            requested_language=requested if audience == "member" else None,
            large_print=audience == "member" and wants_large_print(patient),
        )
        letters.append(Letter(recipient, context))
    return letters


def report_letter(
    report: Mapping[str, Any],
    *,
    request: Mapping[str, Any],
    request_key: str,
    patient: Mapping[str, Any] | None,
    plan: PlanContact,
    now: datetime,
    rights: RightsContacts = DEFAULT_RIGHTS_CONTACTS,
    taglines: Mapping[str, str] | None = None,
) -> NoticeContext:
    """The member's copy of a Consultation Report as a letter in the member's language: what
    the second opinion found and recommends (policy VI; HSC 1383.15)."""
    language, requested = choose_notice_language(patient)
    performer = next(
        (str(p["display"]) for p in report.get("performer") or [] if p.get("display")), ""
    )
    issued = str(report.get("issued") or report.get("effectiveDateTime") or "")[:10]
    return NoticeContext(
        kind="report-member",
        language=language,
        outcome=Outcome.APPROVED_IN_NETWORK,
        **_letter_fields(patient, request, request_key, plan, now, rights, taglines),
        requested_language=requested,
        large_print=wants_large_print(patient),
        report_conclusion=str(report.get("conclusion") or ""),
        report_text=presented_text(report),
        report_performer=performer,
        report_date=date.fromisoformat(issued) if _ISO_DATE.fullmatch(issued) else None,
    )


def _letter_fields(
    patient: Mapping[str, Any] | None,
    request: Mapping[str, Any],
    request_key: str,
    plan: PlanContact,
    now: datetime,
    rights: RightsContacts,
    taglines: Mapping[str, str] | None,
) -> dict[str, Any]:
    """What every letter about one request prints the same way, whoever it is for."""
    return {
        "notice_date": now.date(),
        "member_display_name": member_name(patient),
        "member_id": member_id(patient),
        "request_reference": request_reference(request, request_key),
        "plan": plan,
        "rights": rights,
        "taglines": taglines,
    }


def presented_text(report: Mapping[str, Any]) -> str:
    """The report's own words, from its plain-text presentedForm attachments (other formats
    stay with the report, which the member can ask for)."""
    texts = []
    for form in report.get("presentedForm") or []:
        if str(form.get("contentType", "")).split(";")[0].strip() != "text/plain":
            continue
        try:
            texts.append(base64.b64decode(form.get("data") or "", validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    return "\n\n".join(t.strip() for t in texts if t.strip())


def translation_flags(context: NoticeContext) -> dict[str, Any]:
    """What a member's Communication carries when its letter is not in the member's language:
    the `translation-owed` category and the language owed (`fhir-adapter notices
    pending-translation` lists them; 42 CFR 438.10(d))."""
    if not context.translation_owed:
        return {}
    return {
        "category": [
            {
                "coding": [
                    {
                        "system": NOTICE_FLAG_SYSTEM,
                        "code": TRANSLATION_OWED,
                        "display": "Translation owed",
                    }
                ]
            }
        ],
        "extension": [{"url": REQUESTED_LANGUAGE_URL, "valueCode": context.requested_language}],
    }


def notice_draft(
    *,
    communication_id: str,
    recipient: str,
    patient_key: str,
    request_key: str,
    claim_response_key: str,
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The notice as the decision writes it: a Communication in `preparation`, addressed and
    identified, its letter still to be rendered (`with_rendered_letter`); `flags` (from
    `translation_flags`) adds a category and extensions."""
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": NOTICE_ID_SYSTEM, "value": communication_id}],
        "basedOn": [{"reference": request_key}],
        "status": "preparation",
        "category": [_NOTIFICATION],
        "subject": {"reference": patient_key},
        "about": [{"reference": claim_response_key}],
        "recipient": [{"reference": recipient}],
    }
    return with_flags(communication, flags or {})


def with_rendered_letter(
    draft: Mapping[str, Any], rendered: RenderedNotice, *, delivered_now: bool, now: datetime
) -> dict[str, Any]:
    """The drafted notice with its letter: the letter's title in place of the draft's first
    words, what else the draft carries (a report copy's references), then the letter as HTML
    and as PDF; `completed` (sent now) when nothing has to travel, else `in-progress` until
    delivered."""
    communication = {
        **draft,
        "status": "completed" if delivered_now else "in-progress",
        "payload": [
            {"contentString": rendered.title},
            *list(draft.get("payload") or [])[1:],
            {
                "contentAttachment": _attachment(
                    "text/html; charset=utf-8", rendered.html.encode(), rendered
                )
            },
            {"contentAttachment": _attachment("application/pdf", rendered.pdf, rendered)},
        ],
    }
    if delivered_now:
        communication["sent"] = format_instant(now)
    return communication


def with_flags(communication: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """`communication` with `flags` (from `translation_flags`): categories and extensions added."""
    for key, values in flags.items():
        communication[key] = [*communication.get(key, []), *values]
    return communication


def _attachment(content_type: str, data: bytes, rendered: RenderedNotice) -> dict[str, Any]:
    return {
        "contentType": content_type,
        "language": rendered.language,
        "data": base64.b64encode(data).decode(),
        "title": rendered.title,
    }


def mailing_proof(
    extensions: list[dict[str, Any]], *, accepted: datetime, mailed_on: str | None
) -> list[dict[str, Any]]:
    """Issue #11: when the mailing service took the member's letter, and the mailing date it
    gave, on the Communication, so the notice's timeliness can be shown (profiles/)."""
    kept = [e for e in extensions if e.get("url") not in (NOTICE_MAILING_URL, NOTICE_MAILED_ON_URL)]
    kept.append({"url": NOTICE_MAILING_URL, "valueDateTime": format_instant(accepted)})
    if mailed_on:
        kept.append({"url": NOTICE_MAILED_ON_URL, "valueDate": mailed_on})
    return kept
