"""The tagline and translation catalogs: what ships, what the plan adds, what `notices check`
reports missing, and which language and print size a member's Patient asks for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from fhir_adapter.cli import app
from fhir_adapter.notices import choose_notice_language, wants_large_print
from fhir_adapter.notices.catalog import (
    BUILT_IN_TAGLINES,
    THRESHOLD_LANGUAGES,
    catalog_gaps,
    load_taglines,
    specialty_name,
)
from fhir_adapter.notices.language import LARGE_PRINT_URL
from fhir_adapter.notices.pdf import font_characters, primary_characters, printable


def patient(*entries: tuple[str, bool | None], **extra: Any) -> dict[str, Any]:
    communication = []
    for code, preferred in entries:
        entry: dict[str, Any] = {"language": {"coding": [{"code": code}]}}
        if preferred is not None:
            entry["preferred"] = preferred
        communication.append(entry)
    return {"resourceType": "Patient", "communication": communication, **extra}


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (None, ("en", None)),
        (patient(("en-US", True)), ("en", None)),
        (patient(("es-MX", True)), ("es", None)),
        (patient(("vi", True)), ("en", "vi")),  # no template: English, Vietnamese owed
        (patient(("zh-Hant", None)), ("en", "zh-hant")),
        # Spanish as well as Vietnamese: the Spanish letter, and still the Vietnamese owed.
        (patient(("es", False), ("vi", True), ("en", False)), ("es", "vi")),
        (patient(("es", True), ("vi", False)), ("es", None)),
    ],
)
def test_the_notice_language_never_hides_a_language_we_cannot_write(
    member: dict[str, Any] | None, expected: tuple[str, str | None]
) -> None:
    assert choose_notice_language(member) == expected


def test_large_print_is_asked_for_on_the_patient_or_a_communication_entry() -> None:
    flag = {"url": LARGE_PRINT_URL, "valueBoolean": True}
    on_entry = patient(("en", True))
    on_entry["communication"][0]["extension"] = [flag]

    assert wants_large_print(patient(("en", True), extension=[flag]))
    assert wants_large_print(on_entry)
    assert not wants_large_print(patient(("en", True)))
    assert not wants_large_print(
        patient(("en", True), extension=[{"url": LARGE_PRINT_URL, "valueBoolean": False}])
    )


def test_every_shipped_tagline_is_a_threshold_language_with_both_numbers_and_prints() -> None:
    codes = {language.code for language in THRESHOLD_LANGUAGES}
    for code, tagline in BUILT_IN_TAGLINES.items():
        assert code in codes
        assert "{phone}" in tagline and "{tty}" in tagline
        assert printable(tagline.format(phone="1-800-555-0100", tty="711")), code


def test_the_letter_font_and_the_tagline_subset_print_every_shipped_tagline() -> None:
    # So a usual letter never loads the 4 MB fallback font. If this fails after a tagline was
    # edited: `fhir-adapter notices fonts`.
    covered = primary_characters() | font_characters("NoticeTaglines.ttf")
    for code, tagline in BUILT_IN_TAGLINES.items():
        assert all(char.isspace() or ord(char) in covered for char in tagline), code


def test_the_plans_taglines_are_laid_over_the_built_in_ones() -> None:
    taglines = load_taglines(json.dumps({"HY": "Armenian {phone} {tty}", "es": "Spanish {phone}"}))

    assert taglines["hy"] == "Armenian {phone} {tty}"
    assert taglines["es"] == "Spanish {phone}"
    assert taglines["vi"] == BUILT_IN_TAGLINES["vi"]


@pytest.mark.parametrize("text", ['["not", "an", "object"]', '{"hy": 1}', '{"hy": "{fax}"}'])
def test_a_malformed_taglines_file_is_refused(text: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        load_taglines(text)


def test_check_names_every_missing_language_and_string() -> None:
    gaps = catalog_gaps(
        {**BUILT_IN_TAGLINES, "ko": "유의사항 {phone} {tty}"},
        printable=printable,
        specialty_names=["Orthopaedic Surgery", "Sports Medicine"],
        plan_hours_translated={"es": False},
    )

    assert "tagline missing: hy (Armenian)" in gaps
    assert "tagline missing: ar (Arabic)" in gaps
    assert not any("tagline missing: vi" in gap for gap in gaps)
    assert "tagline missing: ko (Korean)" not in gaps
    assert "tagline not printable with the packaged fonts: ko" in gaps  # no Hangul font yet
    assert "specialty name missing in es: Sports Medicine" in gaps
    assert not any("Orthopaedic Surgery" in gap for gap in gaps)
    assert "plan hours have no es text (FHIR_ADAPTER_PLAN_HOURS_ES)" in gaps


def test_specialty_names_are_printed_in_the_letter_language() -> None:
    assert specialty_name("Orthopaedic Surgery", "es") == "Cirugía ortopédica"
    assert specialty_name("Orthopaedic Surgery", "en") == "Orthopaedic Surgery"
    assert specialty_name("Sports Medicine", "es") == "Sports Medicine"  # check reports it


def test_the_check_command_reports_and_fails_while_something_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    result = CliRunner().invoke(app, ["notices", "check"])

    assert result.exit_code == 1
    assert "tagline missing: hy (Armenian)" in result.output
    assert "7 tagline(s): es, ja, ru, tl, uk, vi, zh" in result.output

    everything = {lang.code: f"{lang.name} {{phone}} {{tty}}" for lang in THRESHOLD_LANGUAGES}
    everything = {k: v for k, v in everything.items() if k not in BUILT_IN_TAGLINES}
    file = tmp_path / "taglines.json"
    file.write_text(json.dumps(everything))
    monkeypatch.setenv("FHIR_ADAPTER_NOTICE_TAGLINES_FILE", str(file))
    result = CliRunner().invoke(app, ["notices", "check"])

    assert "tagline missing" not in result.output
    assert result.exit_code == 0, result.output


def test_the_contact_settings_default_to_the_sourced_contacts() -> None:
    from fhir_adapter.bootstrap import rights_contacts
    from fhir_adapter.config import Settings
    from fhir_adapter.notices import DEFAULT_RIGHTS_CONTACTS

    assert rights_contacts(Settings(_env_file=None)) == DEFAULT_RIGHTS_CONTACTS
