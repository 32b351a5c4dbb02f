"""The letters a decision owes, as the workflow builds them from the decision, the member's
Patient and the directory's providers (the pure part of policy V)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fhir_adapter.codes import DenialReason
from fhir_adapter.notices import NoticeContext, PlanContact, render
from fhir_adapter.notices.stored import context_from_json, context_to_json, render_stored
from fhir_adapter.policy.decision import Decision, Outcome, RuleStep
from fhir_adapter.policy.facts import Provider
from fhir_adapter.workflow.letters import (
    NOTICE_FLAG_SYSTEM,
    Letter,
    letters_for,
    member_id,
    notice_draft,
    presented_text,
    report_letter,
    translation_flags,
    with_flags,
    with_rendered_letter,
)
from fhir_adapter.workflow.reports import report_communication

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
PLAN = PlanContact("Demo Plan", "1-800-555-0100", "711", ("1 Main St",), "https://x.example", "9-5")
ORTHO = Provider(
    "PractitionerRole/ortho",
    display="Dr. Ana Ruiz",
    specialty_names=("Orthopaedic Surgery",),
    organization_name="Valley Orthopaedic Group",
    address=("1200 Fulton Street", "Fresno, CA 93721"),
    phone="559-555-0101",
)


def patient(language: str = "en") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"given": ["Hồng"], "family": "Nguyễn"}],
        "identifier": [
            {"system": "urn:other", "value": "X-1"},
            {
                "type": {"coding": [{"code": "MB"}]},
                "system": "urn:plan:member",
                "value": "91234567A",
            },
        ],
        "communication": [{"language": {"coding": [{"code": language}]}, "preferred": True}],
    }


def letters(decision: Decision, member: dict[str, Any]) -> list[Letter]:
    return letters_for(
        decision,
        task_id="t1",
        request={"identifier": [{"value": "SOR-1"}]},
        request_key="ServiceRequest/1",
        patient=member,
        patient_key="Patient/1",
        professional_requester="PractitionerRole/pcp",
        plan=PLAN,
        expedited=False,
        now=NOW,
    )


def test_approval_letters_list_the_directorys_organization_address_and_phone() -> None:
    member, requester = letters(Decision(Outcome.APPROVED_IN_NETWORK, (ORTHO,)), patient())
    text = render(member.context).text

    assert member.context.member_id == "91234567A"  # the MB identifier, not the first one
    assert (
        "Dr. Ana Ruiz, Orthopaedic Surgery, Valley Orthopaedic Group, 1200 Fulton Street, "
        "Fresno, CA 93721, phone 559-555-0101" in " ".join(text.split())
    )
    assert requester.context.language == "en" and requester.context.member_id == "91234567A"


def test_a_member_in_vietnamese_gets_english_a_flag_and_the_requester_no_flag() -> None:
    decision = Decision.deny(DenialReason.COVERAGE_INACTIVE).with_trail(
        (RuleStep("rule_coverage_active", "42 CFR 438.210", "denied"),)
    )
    member, requester = letters(decision, patient("vi"))

    assert member.context.language == "en" and member.context.requested_language == "vi"
    assert requester.context.requested_language is None
    draft = notice_draft(
        communication_id="c1",
        recipient="Patient/1",
        patient_key="Patient/1",
        request_key="ServiceRequest/1",
        claim_response_key="ClaimResponse/1",
        flags=translation_flags(member.context),
    )
    flagged = with_rendered_letter(draft, render(member.context), delivered_now=True, now=NOW)
    assert [c["coding"][0]["code"] for c in flagged["category"]] == [
        "notification",
        "translation-owed",
    ]
    assert flagged["category"][1]["coding"][0]["system"] == NOTICE_FLAG_SYSTEM
    assert translation_flags(requester.context) == {}


def test_member_id_falls_back_to_the_first_identifier_or_nothing() -> None:
    assert member_id({"identifier": [{"value": "A1"}, {"value": "B2"}]}) == "A1"
    assert member_id({}) == ""


def member_report_letter(report: dict[str, Any], language: str) -> NoticeContext:
    return report_letter(
        report,
        request={},
        request_key="ServiceRequest/1",
        patient=patient(language),
        plan=PLAN,
        now=NOW,
    )


def test_the_report_letter_reads_the_conclusion_and_the_plain_text_report() -> None:
    import base64

    report = {
        "conclusion": "Physical therapy first.",
        "issued": "2027-02-10T09:00:00Z",
        "performer": [{"display": "Dr. Elena Park"}],
        "presentedForm": [
            {
                "contentType": "text/plain; charset=utf-8",
                "data": base64.b64encode(b"One.\n\nTwo.").decode(),
            },
            {"contentType": "application/pdf", "data": "JVBERi0="},
            {"contentType": "text/plain", "data": "not base64!"},
        ],
    }
    context = member_report_letter(report, "es")

    assert presented_text(report) == "One.\n\nTwo."
    assert context.language == "es" and context.report_performer == "Dr. Elena Park"
    text = render(context).text
    assert "Lo que encontró y recomienda la segunda opinión" in text
    assert "Physical therapy first." in text
    assert "One.\n\nTwo." in text  # its paragraphs kept
    assert "10 de febrero de 2027" in " ".join(text.split())


def test_a_letter_stored_with_its_render_job_comes_back_the_same() -> None:
    """Issue #13: the worker renders the letter as decided, from the JSON stored with its job."""
    denial = Decision.deny(DenialReason.COVERAGE_INACTIVE).with_trail(
        (RuleStep("rule_coverage_active", "42 CFR 438.210", "denied"),)
    )
    decisions = (
        denial,
        Decision(Outcome.APPROVED_IN_NETWORK, (ORTHO,)),
        Decision(Outcome.APPROVED_OUT_OF_NETWORK, (ORTHO,)),
    )
    for decision in decisions:
        for letter in letters(decision, patient("vi")):
            stored = json.loads(json.dumps(context_to_json(letter.context)))
            assert context_from_json(stored) == letter.context
            assert render_stored(stored) == render(letter.context)


def test_a_report_copy_keeps_its_references_and_flags_once_its_letter_is_rendered() -> None:
    """Issue #13: the member's copy of a report is drafted with the report and the proposals and
    rendered by the worker; the letter's title replaces the draft's first words, the references
    stay, the letter follows, and a letter not in the member's language is flagged."""
    report = {"conclusion": "Physical therapy first.", "issued": "2027-02-10T09:00:00Z"}
    context = member_report_letter(report, "vi")
    stored = json.loads(json.dumps(context_to_json(context)))
    assert render_stored(stored) == render(context)  # as the render job carries it
    draft = with_flags(
        report_communication(
            communication_id="c1",
            report_key="DiagnosticReport/1",
            request_key="ServiceRequest/1",
            patient_key="Patient/1",
            recipient="Patient/1",
            sender=None,
            proposals=["ServiceRequest/2"],
            drafted=True,
        ),
        translation_flags(context),
    )
    assert draft["status"] == "preparation" and "sent" not in draft
    done = with_rendered_letter(draft, render(context), delivered_now=True, now=NOW)
    assert done["status"] == "completed" and done["sent"] == "2026-11-25T18:00:00.000Z"
    assert [next(iter(p)) for p in done["payload"]] == [
        "contentString",
        "contentReference",
        "contentReference",
        "contentAttachment",
        "contentAttachment",
    ]
    assert done["payload"][0]["contentString"] == render(context).title
    assert done["payload"][1:3] == draft["payload"][1:]
    assert [a["contentAttachment"]["contentType"] for a in done["payload"][3:]] == [
        "text/html; charset=utf-8",
        "application/pdf",
    ]
    assert [c["coding"][0]["code"] for c in done["category"]] == [
        "notification",
        "translation-owed",
    ]
    assert done["extension"] == [translation_flags(context)["extension"][0]]
    assert {k: v for k, v in done.items() if k not in ("status", "sent", "payload")} == {
        k: v for k, v in draft.items() if k not in ("status", "payload")
    }  # nothing else changes
