"""What a written notice says, as plain frozen data: only what the letter itself prints (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal, get_args

from fhir_adapter.codes import DenialReason
from fhir_adapter.notices.contacts import DEFAULT_RIGHTS_CONTACTS, RightsContacts
from fhir_adapter.policy.decision import Outcome

NoticeKind = Literal[
    "denial-member", "denial-requester", "approval-member", "approval-requester", "report-member"
]
Language = Literal["en", "es"]
Audience = Literal["member", "requester"]

NOTICE_KINDS: tuple[NoticeKind, ...] = get_args(NoticeKind)
LANGUAGES: tuple[Language, ...] = get_args(Language)

# DHCS "Your Rights" attachment and regulatory.md §5.3 (42 CFR 438.404, 438.420, AB 205).
APPEAL_DAYS = 60  # appeal within 60 days of the Notice of Action
CONTINUING_SERVICES_DAYS = 10  # appeal within 10 days to keep services during the appeal
EXPEDITED_APPEAL_HOURS = 72
STANDARD_APPEAL_DAYS = 30
STATE_HEARING_DAYS = 120  # from the plan's appeal decision (Notice of Appeal Resolution)

_APPROVED = (Outcome.APPROVED_IN_NETWORK, Outcome.APPROVED_OUT_OF_NETWORK)


@dataclass(frozen=True, slots=True)
class PlanContact:
    """How the member or provider reaches the plan, exactly as the letter prints it.

    `hours` is printed in English notices and, when `hours_es` is empty, in Spanish ones too.
    """

    name: str
    phone: str
    tty: str
    address_lines: tuple[str, ...]
    website: str
    hours: str
    hours_es: str | None = None

    def hours_for(self, language: Language) -> str:
        return self.hours_es if language == "es" and self.hours_es else self.hours


@dataclass(frozen=True, slots=True)
class NoticeProvider:
    """A provider the member may see, as the letter lists it (empty texts are left out)."""

    display_name: str
    specialty: str
    organization: str
    phone: str | None = None
    address: tuple[str, ...] = ()  # printable address lines, from the directory


@dataclass(frozen=True, slots=True)
class NoticeContext:
    """Everything one notice prints; `render()` turns it into text, HTML and PDF.

    Raises ValueError when the pieces contradict each other (a denial notice for an approval,
    a denial without a specific reason, an out-of-network approval without its authorization).
    """

    kind: NoticeKind
    language: Language
    notice_date: date
    member_display_name: str
    request_reference: str
    outcome: Outcome
    plan: PlanContact
    denial_reason: DenialReason | None = None
    reason_text: str = ""
    rule: str = ""
    basis: str = ""
    providers: tuple[NoticeProvider, ...] = ()
    authorization_number: str | None = None
    authorization_valid_until: date | None = None
    expedited: bool = False
    member_id: str = ""
    mailing_date: date | None = None  # default: the notice date
    # The member's preferred language when no approved template exists for it: the letter is
    # in `language` plus taglines, and a translation is owed (42 CFR 438.10(d)).
    requested_language: str | None = None
    large_print: bool = False  # 18 pt (regulatory.md §5.6)
    rights: RightsContacts = DEFAULT_RIGHTS_CONTACTS
    taglines: Mapping[str, str] | None = None  # language code -> tagline; None: built-in
    # A consultation report letter: what the second opinion found and recommends.
    report_conclusion: str = ""
    report_text: str = ""
    report_performer: str = ""
    report_date: date | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOTICE_KINDS:
            raise ValueError(f"unknown notice kind {self.kind!r}")
        if self.language not in LANGUAGES:
            raise ValueError(f"unsupported notice language {self.language!r}")
        if not self.member_display_name.strip():
            raise ValueError("a notice names the member")
        if not self.request_reference.strip():
            raise ValueError("a notice names the request it answers")
        if self.kind == "report-member":
            if not (self.report_conclusion.strip() or self.report_text.strip()):
                raise ValueError("a report letter needs the report's conclusion or text")
        elif self.is_denial:
            self._check_denial()
        else:
            self._check_approval()

    def _check_denial(self) -> None:
        if self.outcome is not Outcome.DENIED:
            raise ValueError(f"a {self.kind} notice needs a denied outcome, not {self.outcome}")
        # CMS-0057-F and 42 CFR 438.404(b)(2): a specific reason and what it rests on.
        for name in ("reason_text", "rule", "basis"):
            if not getattr(self, name).strip():
                raise ValueError(f"a denial notice needs a non-empty {name}")

    def _check_approval(self) -> None:
        if self.outcome not in _APPROVED:
            raise ValueError(f"a {self.kind} notice needs an approved outcome, not {self.outcome}")
        if not self.providers:
            raise ValueError("an approval notice lists the providers the member may see")
        if self.outcome is Outcome.APPROVED_OUT_OF_NETWORK:
            if len(self.providers) != 1:
                raise ValueError("an out-of-network approval authorizes exactly one provider")
            if not (self.authorization_number or "").strip():
                raise ValueError("an out-of-network approval needs its authorization number")
            if self.authorization_valid_until is None:
                raise ValueError("an out-of-network approval needs its validity end date")

    @property
    def is_denial(self) -> bool:
        return self.kind.startswith("denial-")

    @property
    def audience(self) -> Audience:
        return "member" if self.kind.endswith("-member") else "requester"

    @property
    def is_out_of_network(self) -> bool:
        return self.outcome is Outcome.APPROVED_OUT_OF_NETWORK

    @property
    def mailed_on(self) -> date:
        """The mailing date the letter prints: deadlines still count from the notice date."""
        return self.mailing_date or self.notice_date

    @property
    def translation_owed(self) -> bool:
        return bool(self.requested_language) and self.audience == "member"

    @property
    def appeal_deadline(self) -> date:
        """The last day to ask for an appeal: 60 days after the notice date."""
        return self.notice_date + timedelta(days=APPEAL_DAYS)

    @property
    def continuing_services_deadline(self) -> date:
        """The last day to appeal and keep services during the appeal: 10 days after the notice."""
        return self.notice_date + timedelta(days=CONTINUING_SERVICES_DAYS)
