"""Written notices after a second-opinion decision: text, HTML and PDF, in English or Spanish (pure).

Build a `NoticeContext`, pass it to `render()`; `choose_language()` picks the language from the
member's Patient resource, and `reason_sentence()` gives the standard wording of a denial reason.
"""

from fhir_adapter.notices.contacts import DEFAULT_RIGHTS_CONTACTS, RightsContacts
from fhir_adapter.notices.formatting import format_date
from fhir_adapter.notices.language import (
    choose_language,
    choose_notice_language,
    preferred_language_code,
    wants_large_print,
)
from fhir_adapter.notices.model import (
    APPEAL_DAYS,
    CONTINUING_SERVICES_DAYS,
    EXPEDITED_APPEAL_HOURS,
    LANGUAGES,
    NOTICE_KINDS,
    STANDARD_APPEAL_DAYS,
    STATE_HEARING_DAYS,
    Audience,
    Language,
    NoticeContext,
    NoticeKind,
    NoticeProvider,
    PlanContact,
)
from fhir_adapter.notices.reasons import reason_sentence
from fhir_adapter.notices.render import RenderedNotice, render

__all__ = [
    "APPEAL_DAYS",
    "CONTINUING_SERVICES_DAYS",
    "DEFAULT_RIGHTS_CONTACTS",
    "EXPEDITED_APPEAL_HOURS",
    "LANGUAGES",
    "NOTICE_KINDS",
    "STANDARD_APPEAL_DAYS",
    "STATE_HEARING_DAYS",
    "Audience",
    "Language",
    "NoticeContext",
    "NoticeKind",
    "NoticeProvider",
    "PlanContact",
    "RenderedNotice",
    "RightsContacts",
    "choose_language",
    "choose_notice_language",
    "format_date",
    "preferred_language_code",
    "reason_sentence",
    "render",
    "wants_large_print",
]
