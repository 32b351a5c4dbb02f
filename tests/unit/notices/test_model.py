"""The notice context refuses contradictions; dates and reason sentences per language."""

from __future__ import annotations

import locale
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from fhir_adapter.codes import DENIAL_TEXT, DenialReason
from fhir_adapter.notices import (
    LANGUAGES,
    NoticeProvider,
    format_date,
    reason_sentence,
)
from fhir_adapter.policy.decision import Outcome
from tests.unit.notices.samples import ORTHO_A, ORTHO_B, PLAN, context


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("denial-member", {"outcome": Outcome.APPROVED_IN_NETWORK}, "denied outcome"),
        ("denial-member", {"reason_text": "  "}, "reason_text"),
        ("denial-requester", {"rule": ""}, "rule"),
        ("denial-requester", {"basis": ""}, "basis"),
        ("approval-member", {"outcome": Outcome.DENIED}, "approved outcome"),
        ("approval-member", {"outcome": Outcome.PENDING_REVIEW}, "approved outcome"),
        ("approval-requester", {"providers": ()}, "lists the providers"),
        ("approval-member", {"member_display_name": " "}, "names the member"),
        ("approval-member", {"request_reference": ""}, "names the request"),
    ],
)
def test_contradictions_are_refused(kind: Any, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        context(kind, "en", **overrides)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "denial-letter", "unknown notice kind"),
        ("language", "fr", "unsupported notice language"),
    ],
)
def test_unknown_kinds_and_languages_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        changes: dict[str, Any] = {field: value}
        replace(context("approval-member", "en"), **changes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"providers": (ORTHO_A, ORTHO_B)}, "exactly one provider"),
        ({"authorization_number": None}, "authorization number"),
        ({"authorization_valid_until": None}, "validity end date"),
    ],
)
def test_an_out_of_network_approval_needs_one_provider_and_its_authorization(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        context("approval-member", "en", outcome=Outcome.APPROVED_OUT_OF_NETWORK, **overrides)


def test_deadlines_count_calendar_days_from_the_notice_date() -> None:
    notice = context("denial-member", "en", notice_date=date(2028, 1, 15))

    assert notice.appeal_deadline == date(2028, 3, 15)  # 2028 is a leap year
    assert notice.continuing_services_deadline == date(2028, 1, 25)
    assert notice.audience == "member" and notice.is_denial


def test_plan_hours_fall_back_to_the_one_text() -> None:
    assert PLAN.hours_for("es") == PLAN.hours_es
    assert PLAN.hours_for("en") == PLAN.hours
    assert replace(PLAN, hours_es=None).hours_for("es") == PLAN.hours


def test_providers_are_plain_values() -> None:
    assert NoticeProvider("Dr. A", "Surgery", "Org") == NoticeProvider(
        "Dr. A", "Surgery", "Org", None
    )


@pytest.mark.parametrize(
    ("value", "en", "es"),
    [
        (date(2027, 1, 26), "January 26, 2027", "26 de enero de 2027"),
        (date(2027, 9, 1), "September 1, 2027", "1 de septiembre de 2027"),
        (date(2028, 2, 29), "February 29, 2028", "29 de febrero de 2028"),
        (date(2027, 12, 31), "December 31, 2027", "31 de diciembre de 2027"),
    ],
)
def test_dates_are_written_per_language(value: date, en: str, es: str) -> None:
    assert format_date(value, "en") == en
    assert format_date(value, "es") == es


def test_dates_ignore_the_system_locale() -> None:
    saved = locale.setlocale(locale.LC_TIME)
    for name in ("de_DE.UTF-8", "C.UTF-8", "C"):
        try:
            locale.setlocale(locale.LC_TIME, name)
        except locale.Error:
            continue
        try:
            assert format_date(date(2027, 3, 5), "en") == "March 5, 2027"
            assert format_date(date(2027, 3, 5), "es") == "5 de marzo de 2027"
        finally:
            locale.setlocale(locale.LC_TIME, saved)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("audience", ["member", "requester"])
@pytest.mark.parametrize("reason", list(DenialReason))
def test_every_denial_reason_has_a_sentence(
    reason: DenialReason, audience: Any, language: Any
) -> None:
    sentence = reason_sentence(reason, language, audience)

    assert sentence.strip().endswith(".")
    if language == "es":
        assert sentence != reason_sentence(reason, "en", audience)
    if (language, audience) == ("en", "requester"):
        assert sentence == DENIAL_TEXT[reason]
