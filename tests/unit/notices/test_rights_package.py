"""The printed denial notice (PDF, read back as a member's copy would be) carries the whole
Medi-Cal rights package, in English, in Spanish, and in English plus taglines for a language
without an approved template; the print is large enough to read and prints any name."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pypdf
import pytest

from fhir_adapter.notices import DEFAULT_RIGHTS_CONTACTS, Language, RenderedNotice, render
from fhir_adapter.notices.catalog import BUILT_IN_TAGLINES, ENGLISH_TAGLINE
from fhir_adapter.notices.contacts import RightsContacts
from fhir_adapter.policy.decision import Outcome
from tests.unit.notices.samples import BASIS, PLAN, RULE, context, flat

RIGHTS = DEFAULT_RIGHTS_CONTACTS
NOTICE_DATE = date(2027, 1, 26)  # appeal by March 27, 2027; keep services by February 5, 2027


def pdf_pages(notice: RenderedNotice) -> list[str]:
    """Each page's text without the running head (pages 2 on) and the page number."""
    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))
    pages = []
    for number, page in enumerate(reader.pages):
        text = re.sub(r"(Page|Página) \d+ (of|de) \d+\s*$", "", page.extract_text())
        if number:
            head, _, text = text.partition("\n")
            assert (
                head == "Golden Valley Health Plan | Maria Lopez | Task/7d1c2b9e" or " | " in head
            )
        pages.append(text)
    return pages


def pdf_text(notice: RenderedNotice) -> str:
    return flat(" ".join(pdf_pages(notice)))


def taglines(language: str) -> list[str]:
    return [
        flat(text.format(phone=PLAN.phone, tty=PLAN.tty))
        for code, text in BUILT_IN_TAGLINES.items()
        if code != language
    ]


def no_cjk_breaks(text: str) -> str:
    return re.sub(r"\s*([\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef])\s*", r"\1", text)


# Every element of the package, with the public contacts printed in full (regulatory.md §5.3,
# §5.6; HSC 1368.02(b); 42 CFR 438.404(b), 438.10).
PACKAGE: dict[Language, dict[str, str]] = {
    "en": {
        "reason in the member's words": (
            "Your Medi-Cal coverage with us was not active on the date of your request."
        ),
        "appeal 60 days, last date": (
            "You have 60 days from the date of this letter to ask us for an appeal. "
            "The last day to ask for an appeal is March 27, 2027."
        ),
        "expedited appeal 72 h": "ask for a fast appeal. We will answer within 72 hours.",
        "continuing services 10 days, date": (
            "ask for an appeal within 10 days of the date of this letter, that is by "
            "February 5, 2027"
        ),
        "state hearing after the appeal, 120 days": (
            "You must ask within 120 days of the date of our letter with the answer to your appeal."
        ),
        "state hearing online": f"Online: {RIGHTS.hearing_online}",
        "state hearing phone and TDD": (
            f"By phone: {RIGHTS.hearing_phone} (TDD: {RIGHTS.hearing_tdd})"
        ),
        "state hearing address": " ".join(RIGHTS.hearing_address),
        "IMR": "Independent Medical Review (IMR)",
        "DMHC statement": (
            "The California Department of Managed Health Care is responsible for regulating "
            "health care service plans. If you have a grievance against your health plan, you "
            f"should first telephone your health plan at {PLAN.phone}"
        ),
        "DMHC phone and TDD": (
            f"toll-free telephone number ({RIGHTS.dmhc_phone}) and a TDD line ({RIGHTS.dmhc_tdd})"
        ),
        "DMHC website": f"The department's Internet Web site {RIGHTS.dmhc_website} has complaint",
        "ombudsman": "Medi-Cal Managed Care Ombudsman can help you",
        "ombudsman phone": f"Call {RIGHTS.ombudsman_phone}.",
        "free legal help": (
            f"free legal aid, call the Public Inquiry and Response Unit at "
            f"{RIGHTS.legal_help_phone} (TDD: {RIGHTS.legal_help_tdd})"
        ),
        "authorized representative": "(an authorized representative). That person can ask",
        "nondiscrimination": "Discrimination is against the law.",
        "civil rights contacts": (
            f"{RIGHTS.hhs_civil_rights_phone} (TDD: {RIGHTS.hhs_civil_rights_tdd})"
        ),
        "your rights page": "Your Rights under Medi-Cal Managed Care",
        "plan name and address": "Golden Valley Health Plan PO Box 1000 Fresno, CA 93701",
        "member id": "Member ID: 91234567A",
        "mailing date": "Mailing date: January 28, 2027",
    },
    "es": {
        "reason in the member's words": (
            "Su cobertura de Medi-Cal con nosotros no estaba activa en la fecha de su solicitud."
        ),
        "appeal 60 days, last date": (
            "Tiene 60 días a partir de la fecha de esta carta para pedirnos una apelación. "
            "El último día para pedirla es el 27 de marzo de 2027."
        ),
        "expedited appeal 72 h": "pida una apelación rápida. Le responderemos en un plazo de 72 horas.",
        "continuing services 10 days, date": (
            "dentro de los 10 días siguientes a la fecha de esta carta, es decir, a más tardar "
            "el 5 de febrero de 2027"
        ),
        "state hearing after the appeal, 120 days": (
            "Debe pedirla dentro de los 120 días siguientes a la fecha de nuestra carta con la "
            "respuesta a su apelación."
        ),
        "state hearing online": f"Por internet: {RIGHTS.hearing_online}",
        "state hearing phone and TDD": (
            f"Por teléfono: {RIGHTS.hearing_phone} (TDD: {RIGHTS.hearing_tdd})"
        ),
        "state hearing address": " ".join(RIGHTS.hearing_address),
        "IMR": "Revisión Médica Independiente (IMR",
        "DMHC statement": (
            "El Departamento de Atención Médica Administrada de California es responsable de "
            "regular los planes de servicios de atención médica."
        ),
        "DMHC phone and TDD": (
            f"número de teléfono gratuito ({RIGHTS.dmhc_phone}) y una línea TDD ({RIGHTS.dmhc_tdd})"
        ),
        "DMHC website": f"El sitio web del departamento, {RIGHTS.dmhc_website}, tiene",
        "ombudsman": "El Ombudsman de Atención Médica Administrada de Medi-Cal puede ayudarle",
        "ombudsman phone": f"Llame al {RIGHTS.ombudsman_phone}.",
        "free legal help": (
            f"Unidad de Consultas y Respuestas al Público al {RIGHTS.legal_help_phone} "
            f"(TDD: {RIGHTS.legal_help_tdd})"
        ),
        "authorized representative": "(un representante autorizado). Esa persona puede pedir",
        "nondiscrimination": "La discriminación es contra la ley.",
        "civil rights contacts": (
            f"{RIGHTS.hhs_civil_rights_phone} (TDD: {RIGHTS.hhs_civil_rights_tdd})"
        ),
        "your rights page": "Sus derechos en la atención médica administrada de Medi-Cal",
        "plan name and address": "Golden Valley Health Plan PO Box 1000 Fresno, CA 93701",
        "member id": "Número de miembro: 91234567A",
        "mailing date": "Fecha de envío: 28 de enero de 2027",
    },
}


def denial(language: Language, **overrides: Any) -> RenderedNotice:
    fields: dict[str, Any] = {
        "notice_date": NOTICE_DATE,
        "mailing_date": date(2027, 1, 28),
        "member_id": "91234567A",
    }
    return render(context("denial-member", language, **(fields | overrides)))


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_printed_denial_carries_every_element_of_the_rights_package(
    language: Language,
) -> None:
    notice = denial(language)
    text = pdf_text(notice)

    for element, phrase in PACKAGE[language].items():
        assert flat(phrase) in text, element
    # The rule trail stays on the ClaimResponse and the provider's copy.
    assert RULE not in text and BASIS not in text
    assert "Rule:" not in text and "Regla:" not in text
    # Taglines in the other threshold languages we have, and English on a Spanish letter.
    for tagline in taglines(language):
        assert no_cjk_breaks(tagline) in no_cjk_breaks(text)
    assert (flat(ENGLISH_TAGLINE.format(phone=PLAN.phone, tty=PLAN.tty)) in text) == (
        language == "es"
    )


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_your_rights_page_is_a_page_of_its_own(language: Language) -> None:
    pages = pdf_pages(denial(language))
    heading = PACKAGE[language]["your rights page"]

    rights_page = next(page for page in pages if heading in flat(page))
    assert pages.index(rights_page) > 0
    # It starts the page, right under the running head.
    assert flat(rights_page).startswith(heading)
    for deadline in {"en": ("March 27, 2027", "February 5, 2027"), "es": ("27 de marzo de 2027",)}[
        language
    ]:
        assert deadline in flat(rights_page)
    assert RIGHTS.dmhc_phone in rights_page and RIGHTS.ombudsman_phone in rights_page


def test_the_contacts_printed_are_the_plans_settings() -> None:
    rights = RightsContacts(hearing_phone="1-800-000-0001", dmhc_website="www.example.gov")
    text = pdf_text(denial("en", rights=rights))

    assert "By phone: 1-800-000-0001" in text
    assert "Internet Web site www.example.gov" in text
    assert DEFAULT_RIGHTS_CONTACTS.hearing_phone not in text


def test_a_language_without_a_template_gets_english_with_its_tagline_first() -> None:
    notice = denial("en", requested_language="vi", member_display_name="Nguyễn Thị Hồng")
    text = pdf_text(notice)
    vietnamese = flat(BUILT_IN_TAGLINES["vi"].format(phone=PLAN.phone, tty=PLAN.tty))

    # The member's own language comes first, before the letter itself.
    assert text.index(vietnamese) < text.index("Golden Valley Health Plan has denied")
    assert "To: Nguyễn Thị Hồng" in text
    for element, phrase in PACKAGE["en"].items():
        assert flat(phrase) in text, element


def test_a_language_without_a_tagline_gets_the_english_tagline_first_not_an_invented_one() -> None:
    notice = denial("en", requested_language="hy")  # Armenian: no tagline shipped yet
    text = pdf_text(notice)

    english = flat(ENGLISH_TAGLINE.format(phone=PLAN.phone, tty=PLAN.tty))
    assert text.index(english) < text.index("Golden Valley Health Plan has denied")


def test_the_plans_own_tagline_catalog_is_used() -> None:
    catalog = {"hy": "ՈՒՇԱԴՐՈՒԹՅՈՒՆ test {phone}"}
    text = pdf_text(denial("en", requested_language="hy", taglines=catalog))

    assert f"ՈՒՇԱԴՐՈՒԹՅՈՒՆ test {PLAN.phone}" in text
    assert "CHÚ Ý" not in text  # only the plan's catalog


# -- print that reads ----------------------------------------------------------------------------


def font_sizes(notice: RenderedNotice) -> Iterator[tuple[float, str]]:
    """(size in points, text) of every piece of text shown, from the PDF's own operators."""
    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))
    found: list[tuple[float, str]] = []
    for page in reader.pages:

        def visit(text: str, cm: Any, tm: Any, font: Any, size: float) -> None:
            if text.strip():
                scale = (tm[0] ** 2 + tm[1] ** 2) ** 0.5 * (cm[0] ** 2 + cm[1] ** 2) ** 0.5
                found.append((round(size * scale, 2), text.strip()))

        page.extract_text(visitor_text=visit)
    return iter(found)


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("denial-member", Outcome.DENIED),
        ("approval-member", Outcome.APPROVED_IN_NETWORK),
        ("denial-requester", Outcome.DENIED),
        ("report-member", Outcome.APPROVED_IN_NETWORK),
    ],
)
def test_no_text_is_under_12_point_and_headings_are_larger(kind: Any, outcome: Outcome) -> None:
    notice = render(context(kind, "en", outcome=outcome))
    sizes = list(font_sizes(notice))

    assert sizes and min(size for size, _ in sizes) >= 12
    body = {size for size, text in sizes if text.startswith("Request number:")}
    assert body == {12}
    heading = next(size for size, text in sizes if text.startswith("How to contact us"))
    title = sizes[0][0]
    assert notice.title.startswith(sizes[0][1])
    assert heading > 12 and title > heading


def test_large_print_is_18_point_everywhere() -> None:
    notice = denial("es", large_print=True)
    sizes = list(font_sizes(notice))

    assert min(size for size, _ in sizes) >= 18
    assert PACKAGE["es"]["ombudsman phone"] in pdf_text(notice)
    assert "font-size: 18.0pt" in notice.html


@pytest.mark.parametrize(
    "name",
    ["Nguyễn Thị Hồng", "Trần Văn Đức", "王小明", "陳美玲", "Zoë Ñúñez-Çelik", "Алёна Петрова"],
)
@pytest.mark.parametrize("kind", ["denial-member", "approval-member"])
def test_names_in_any_script_round_trip_through_the_pdf(name: str, kind: Any) -> None:
    notice = render(context(kind, "en", member_display_name=name))

    first_page = pdf_pages(notice)[0]
    assert f"To: {name}" in first_page


def test_the_pdf_declares_its_language_and_embeds_its_fonts() -> None:
    notice = denial("es")
    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))

    assert reader.trailer["/Root"]["/Lang"] == "es"
    fonts = {
        str(font.get_object()["/BaseFont"])
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert any("DejaVuSans" in name for name in fonts)
    assert not any("Helvetica" in name for name in fonts)
