"""Notice contexts for the tests: one plan, three providers, a builder per kind."""

from __future__ import annotations

from datetime import date
from typing import Any

from fhir_adapter.codes import DenialReason
from fhir_adapter.notices import (
    Audience,
    Language,
    NoticeContext,
    NoticeKind,
    NoticeProvider,
    PlanContact,
    reason_sentence,
)
from fhir_adapter.policy.decision import Outcome

NOTICE_DATE = date(2027, 1, 26)
PLAN = PlanContact(
    name="Golden Valley Health Plan",
    phone="1-800-555-0100",
    tty="711",
    address_lines=("PO Box 1000", "Fresno, CA 93701"),
    website="https://www.goldenvalley.example",
    hours="Monday to Friday, 8 a.m. to 6 p.m.",
    hours_es="lunes a viernes, de 8 a. m. a 6 p. m.",
)
ORTHO_A = NoticeProvider(
    "Dr. Ana Ruiz",
    "Orthopaedic Surgery",
    "Valley Orthopaedic Group",
    "559-555-0101",
    ("1200 Fulton Street, Suite 300", "Fresno, CA 93721"),
)
ORTHO_B = NoticeProvider("Dr. Bo Lee", "Orthopaedic Surgery", "Fresno Bone and Joint", None)
ORTHO_C = NoticeProvider("Dr. Carla Diaz", "Orthopaedic Surgery", "", "559-555-0103")
OUT_OF_NETWORK = NoticeProvider(
    "Dr. Omar Haddad", "Hand Surgery", "Stanford Hand Center", "650-555-0199"
)
RULE = "rule_coverage_active"
BASIS = "Policy (coverage statement); 42 CFR 438.210"
AUTHORIZATION = "SMO-4F2A9C1D7E3B"
VALID_UNTIL = date(2027, 4, 26)
REPORT_CONCLUSION = (
    "The MRI shows a partial tear of the rotator cuff. Surgery is not needed now: six weeks of "
    "physical therapy are recommended, then a follow-up visit."
)


def context(kind: NoticeKind, language: Language, **overrides: Any) -> NoticeContext:
    """A valid context of `kind`; approvals are in network unless `outcome` says otherwise."""
    audience: Audience = "member" if kind.endswith("-member") else "requester"
    fields: dict[str, Any] = {
        "kind": kind,
        "language": language,
        "notice_date": NOTICE_DATE,
        "member_display_name": "Maria Lopez",
        "request_reference": "Task/7d1c2b9e",
        "outcome": Outcome.APPROVED_IN_NETWORK,
        "plan": PLAN,
        "providers": (ORTHO_A, ORTHO_B, ORTHO_C),
    }
    if kind.startswith("denial-"):
        fields |= {
            "outcome": Outcome.DENIED,
            "providers": (),
            "denial_reason": DenialReason.COVERAGE_INACTIVE,
            "reason_text": reason_sentence(DenialReason.COVERAGE_INACTIVE, language, audience),
            "rule": RULE,
            "basis": BASIS,
        }
    if kind == "report-member":
        fields |= {
            "providers": (),
            "report_conclusion": REPORT_CONCLUSION,
            "report_performer": "Dr. Omar Haddad",
            "report_date": date(2027, 2, 10),
        }
    if overrides.get("outcome") is Outcome.APPROVED_OUT_OF_NETWORK:
        fields |= {
            "providers": (OUT_OF_NETWORK,),
            "authorization_number": AUTHORIZATION,
            "authorization_valid_until": VALID_UNTIL,
        }
    return NoticeContext(**(fields | overrides))


def flat(text: str) -> str:
    """`text` with every run of whitespace as one space (wrapping must not matter)."""
    return " ".join(text.split())
