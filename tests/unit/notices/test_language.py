"""The notice language from Patient.communication: preferred first, only en/es, else English."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_adapter.notices import choose_language, preferred_language_code

BCP47 = "urn:ietf:bcp:47"


def entry(
    code: str | None = None,
    *,
    preferred: bool | None = None,
    text: str | None = None,
    system: str | None = BCP47,
) -> dict[str, Any]:
    concept: dict[str, Any] = {}
    if code is not None:
        concept["coding"] = [{"system": system, "code": code}] if system else [{"code": code}]
    if text is not None:
        concept["text"] = text
    found: dict[str, Any] = {"language": concept}
    if preferred is not None:
        found["preferred"] = preferred
    return found


def patient(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "communication": list(entries)}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (patient(entry("es", preferred=True)), "es"),
        (patient(entry("es-MX", preferred=True)), "es"),
        (patient(entry("es_US")), "es"),
        (patient(entry("spa", system="urn:ietf:bcp:47")), "es"),
        (patient(entry("spa", system="http://terminology.hl7.org/CodeSystem/iso639-2")), "es"),
        (patient(entry("ES", system=None)), "es"),
        (patient(entry("en-US", preferred=True)), "en"),
        (patient(entry(text="Español")), "es"),
        (patient(entry(text="Spanish (Mexico)")), "es"),
    ],
    ids=[
        "es-preferred",
        "es-MX",
        "es_US",
        "spa",
        "iso639-2",
        "no-system",
        "en-US",
        "text",
        "text-region",
    ],
)
def test_one_entry(resource: dict[str, Any], expected: str) -> None:
    assert choose_language(resource) == expected


def test_the_preferred_entry_wins_wherever_it_is_listed() -> None:
    assert choose_language(patient(entry("en"), entry("es", preferred=True))) == "es"
    assert choose_language(patient(entry("es"), entry("en", preferred=True))) == "en"


def test_without_a_preferred_entry_the_first_listed_wins() -> None:
    assert choose_language(patient(entry("es-MX"), entry("en"))) == "es"
    assert choose_language(patient(entry("en"), entry("es"))) == "en"
    assert choose_language(patient(entry("es", preferred=False), entry("en"))) == "es"


def test_an_unsupported_preferred_language_falls_to_the_next_supported_one() -> None:
    resource = patient(entry("zh-Hant", preferred=True), entry("vi"), entry("es"))

    assert choose_language(resource) == "es"
    assert preferred_language_code(resource) == "zh-hant"


def test_only_unsupported_languages_give_english() -> None:
    resource = patient(entry("vi", preferred=True), entry("ko"))

    assert choose_language(resource) == "en"
    assert preferred_language_code(resource) == "vi"


@pytest.mark.parametrize(
    "resource",
    [
        None,
        {"resourceType": "Patient"},
        patient(),
        {"resourceType": "Patient", "communication": "es"},
        {
            "resourceType": "Patient",
            "communication": [None, 3, {"language": "es"}, {"language": {"coding": "es"}}],
        },
        patient(entry(text="Klingon")),
    ],
    ids=[
        "no-patient",
        "no-communication",
        "empty",
        "not-a-list",
        "malformed-entries",
        "unknown-text",
    ],
)
def test_nothing_usable_gives_english(resource: dict[str, Any] | None) -> None:
    assert choose_language(resource) == "en"


def test_preferred_language_code_is_none_without_codes() -> None:
    assert preferred_language_code(None) is None
    assert preferred_language_code(patient(entry(text="Spanish"))) is None
    assert preferred_language_code(patient(entry("es-MX", preferred=True))) == "es-mx"
