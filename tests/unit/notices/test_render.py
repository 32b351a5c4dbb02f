"""What each notice says, in English and Spanish, as text, HTML and PDF."""

from __future__ import annotations

import html
import io
import re
from datetime import date

import pypdf
import pytest

from fhir_adapter.codes import DenialReason
from fhir_adapter.notices import (
    LANGUAGES,
    NOTICE_KINDS,
    Language,
    NoticeKind,
    NoticeProvider,
    RenderedNotice,
    render,
)
from fhir_adapter.policy.decision import Outcome
from tests.unit.notices.samples import (
    AUTHORIZATION,
    BASIS,
    ORTHO_A,
    ORTHO_B,
    ORTHO_C,
    OUT_OF_NETWORK,
    PLAN,
    RULE,
    context,
    flat,
)

KIND_AND_LANGUAGE = [(kind, language) for kind in NOTICE_KINDS for language in LANGUAGES]
APPROVAL_KINDS: tuple[NoticeKind, ...] = ("approval-member", "approval-requester")
MALICIOUS = "<script>alert('x')</script> Maria"

# (notice date, appeal deadline en/es, continuing-services deadline en/es): a plain month, a leap
# February and a change of year.
DEADLINES = [
    (
        date(2027, 1, 26),
        "March 27, 2027",
        "27 de marzo de 2027",
        "February 5, 2027",
        "5 de febrero de 2027",
    ),
    (
        date(2028, 1, 15),
        "March 15, 2028",
        "15 de marzo de 2028",
        "January 25, 2028",
        "25 de enero de 2028",
    ),
    (
        date(2026, 12, 28),
        "February 26, 2027",
        "26 de febrero de 2027",
        "January 7, 2027",
        "7 de enero de 2027",
    ),
]

# The member denial notice's elements (42 CFR 438.404(b); regulatory.md §5.3-§5.4), per language.
DENIAL_MEMBER_ELEMENTS: dict[Language, dict[str, str]] = {
    "en": {
        "decision": "has denied your request for a second medical opinion",
        "reason": "Your Medi-Cal coverage with us was not active on the date of your request.",
        "documents free of charge": "You can see them and get copies free of charge.",
        "appeal within 60 days": "You have 60 days from the date of this letter to ask us for an appeal.",
        "expedited appeal 72 hours": "We will answer within 72 hours.",
        "standard appeal 30 days": 'We will send you our written answer (a "Notice of Appeal Resolution") within 30 days.',
        "grievance": "You can file a grievance (complaint) with us",
        "state hearing within 120 days": "ask for a State Hearing with the California Department of Social Services (CDSS). An administrative law judge will review your case. You must ask within 120 days",
        "imr": "Independent Medical Review (IMR)",
        "rights are free": "An appeal, a grievance, a State Hearing and an IMR are free.",
        "phone": f"Phone: {PLAN.phone}",
        "tty": f"TTY: {PLAN.tty}",
        "hours": f"Hours: {PLAN.hours}",
        "website": PLAN.website,
    },
    "es": {
        "decision": "negó su solicitud de una segunda opinión médica",
        "reason": "Su cobertura de Medi-Cal con nosotros no estaba activa en la fecha de su solicitud.",
        "documents free of charge": "Puede verlos y recibir copias gratis.",
        "appeal within 60 days": "Tiene 60 días a partir de la fecha de esta carta para pedirnos una apelación.",
        "expedited appeal 72 hours": "Le responderemos en un plazo de 72 horas.",
        "standard appeal 30 days": 'Le enviaremos nuestra respuesta por escrito (un "Aviso de Resolución de la Apelación") en un plazo de 30 días.',
        "grievance": "Puede presentar una queja (reclamo) ante nosotros",
        "state hearing within 120 days": "puede pedir una Audiencia Estatal al Departamento de Servicios Sociales de California (CDSS). Un juez de derecho administrativo revisará su caso. Debe pedirla dentro de los 120 días",
        "imr": "Revisión Médica Independiente (IMR",
        "rights are free": "La apelación, la queja, la Audiencia Estatal y la IMR son gratis.",
        "phone": f"Teléfono: {PLAN.phone}",
        "tty": f"TTY: {PLAN.tty}",
        "hours": f"Horario: {PLAN.hours_es}",
        "website": PLAN.website,
    },
}

# Phrases only one language's notice uses, to catch a template in the wrong language.
ONLY_IN: dict[Language, tuple[str, ...]] = {
    "en": ("Request number:", "How to contact us"),
    "es": ("Número de solicitud:", "Cómo comunicarse con nosotros"),
}


def other(language: Language) -> Language:
    return "es" if language == "en" else "en"


def pdf_text(notice: RenderedNotice) -> str:
    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))
    pages = [page.extract_text() for page in reader.pages]
    # From page 2 on, the first line is the running head (plan | member).
    for number, page_text in enumerate(pages[1:], start=1):
        head, _, rest = page_text.partition("\n")
        assert head.startswith("Golden Valley Health Plan | "), head
        pages[number] = rest
    text = "\n".join(pages)
    text = re.sub(r"(Page|Página) \d+ (of|de) \d+", " ", text)
    return unwrapped(flat(text.replace("\u2022", "-")))


def text_without_underlines(notice: RenderedNotice) -> str:
    return unwrapped(flat(re.sub(r"(?m)^[=-]+$", " ", notice.text)))


def unwrapped(text: str) -> str:
    """Scripts written without spaces (Chinese, Japanese) wrap between any two characters: a
    line break next to one is not a space in the text."""
    return re.sub(r"\s*([\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef])\s*", r"\1", text)


# -- denial notices ------------------------------------------------------------------------------


@pytest.mark.parametrize(("notice_date", "appeal_en", "appeal_es", "keep_en", "keep_es"), DEADLINES)
@pytest.mark.parametrize("language", LANGUAGES)
def test_denial_member_notice_states_every_required_element(
    language: Language,
    notice_date: date,
    appeal_en: str,
    appeal_es: str,
    keep_en: str,
    keep_es: str,
) -> None:
    text = flat(render(context("denial-member", language, notice_date=notice_date)).text)

    for element, phrase in DENIAL_MEMBER_ELEMENTS[language].items():
        assert phrase in text, element
    if language == "en":
        assert f"The last day to ask for an appeal is {appeal_en}." in text
        assert (
            f"ask for an appeal within 10 days of the date of this letter, that is by {keep_en},"
            in text
        )
    else:
        assert f"El último día para pedirla es el {appeal_es}." in text
        assert (
            f"pida una apelación dentro de los 10 días siguientes a la fecha de esta carta, es decir, a más tardar el {keep_es},"
            in text
        )


@pytest.mark.parametrize("language", LANGUAGES)
def test_denial_member_notice_prints_the_reason_given_not_a_stock_one(language: Language) -> None:
    reason = "The reviewer found the same question answered by Dr. Ruiz on 2027-01-10."
    notice = render(
        context(
            "denial-member",
            language,
            denial_reason=DenialReason.REVIEWER_DENIED,
            reason_text=reason,
            rule="reviewer",
            basis="42 CFR 438.210(b)(3)",
        )
    )

    assert reason in flat(notice.text)
    # The rule trail is for the ClaimResponse and the provider's copy, not the member's letter.
    assert "42 CFR 438.210(b)(3)" not in flat(notice.text + notice.html)
    assert "reviewer" not in flat(notice.text).replace("reviewer found", "")


@pytest.mark.parametrize("language", LANGUAGES)
def test_expedited_denials_say_so(language: Language) -> None:
    member = flat(render(context("denial-member", language, expedited=True)).text)
    requester = flat(render(context("denial-requester", language, expedited=True)).text)
    standard = flat(render(context("denial-member", language)).text)

    urgent = {"en": "as urgent (expedited)", "es": "como urgente (acelerada)"}[language]
    assert urgent in member
    assert urgent not in standard
    assert {"en": "(expedited review)", "es": "(revisión acelerada)"}[language] in requester


@pytest.mark.parametrize("language", LANGUAGES)
def test_denial_requester_notice_states_decision_reason_basis_peer_to_peer_and_member_notice(
    language: Language,
) -> None:
    text = flat(render(context("denial-requester", language)).text)

    expected = {
        "en": [
            "Decision: Golden Valley Health Plan has denied this request for a second medical opinion.",
            "The member's coverage was not active on the date of the request.",
            "Reason code: coverage-inactive",
            f"Rule: {RULE}",
            f"Basis: {BASIS}",
            f"Call {PLAN.phone} ({PLAN.hours}) and ask for a peer-to-peer discussion about request Task/7d1c2b9e.",
            "We have sent the member a written Notice of Action",
            "rights to an appeal (until March 27, 2027)",
        ],
        "es": [
            "Decisión: Golden Valley Health Plan negó esta solicitud de una segunda opinión médica.",
            "La cobertura del miembro no estaba activa en la fecha de la solicitud.",
            "Código del motivo: coverage-inactive",
            f"Regla: {RULE}",
            f"Fundamento: {BASIS}",
            f"Llame al {PLAN.phone} ({PLAN.hours_es}) y pida una conversación de médico a médico (peer-to-peer) sobre la solicitud Task/7d1c2b9e.",
            "Le enviamos al miembro un Aviso de Acción por escrito",
            "a una apelación (hasta el 27 de marzo de 2027)",
        ],
    }[language]
    for phrase in expected:
        assert phrase in text


# -- approval notices ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", APPROVAL_KINDS)
def test_in_network_approval_lists_every_provider_and_needs_no_authorization(
    kind: NoticeKind, language: Language
) -> None:
    text = flat(render(context(kind, language)).text)

    phone = {"en": "phone", "es": "teléfono"}[language]
    specialty = {"en": "Orthopaedic Surgery", "es": "Cirugía ortopédica"}[language]
    address = ", ".join(ORTHO_A.address)
    assert (
        f"- {ORTHO_A.display_name}, {specialty}, {ORTHO_A.organization}, {address}, {phone} {ORTHO_A.phone}"
        in text
    )
    assert f"- {ORTHO_B.display_name}, {specialty}, {ORTHO_B.organization} -" in text
    # An empty organization is left out, not printed as ", ,".
    assert f"- {ORTHO_C.display_name}, {specialty}, {phone} {ORTHO_C.phone}" in text
    no_authorization = {
        (
            "approval-member",
            "en",
        ): "You do not need an authorization (pre-approval) to see a provider in our network",
        (
            "approval-member",
            "es",
        ): "No necesita una autorización (aprobación previa) para ver a un proveedor de nuestra red",
        (
            "approval-requester",
            "en",
        ): "No authorization is needed for a second opinion from an in-network provider.",
        (
            "approval-requester",
            "es",
        ): "No se necesita autorización para una segunda opinión con un proveedor de la red.",
    }[(kind, language)]
    assert no_authorization in text
    assert {
        "en": "There is no copay for Medi-Cal members.",
        "es": "Los miembros de Medi-Cal no pagan copago.",
    }[language] in text
    assert AUTHORIZATION not in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", APPROVAL_KINDS)
def test_out_of_network_approval_gives_the_provider_authorization_and_validity(
    kind: NoticeKind, language: Language
) -> None:
    text = flat(render(context(kind, language, outcome=Outcome.APPROVED_OUT_OF_NETWORK)).text)

    specialty = {"en": "Hand Surgery", "es": "Cirugía de la mano"}[language]
    assert f"- {OUT_OF_NETWORK.display_name}, {specialty}, {OUT_OF_NETWORK.organization}," in text
    if language == "en":
        assert (
            f"Authorization number: {AUTHORIZATION} Valid from January 26, 2027 to April 26, 2027"
            in text
        )
        assert "needs no authorization" in text or "never needs an authorization" in text
        assert "There is no copay for Medi-Cal members." in text
    else:
        assert (
            f"Número de autorización: {AUTHORIZATION} Válida del 26 de enero de 2027 al 26 de abril de 2027"
            in text
        )
        assert "no necesita autorización" in text or "nunca necesita autorización" in text
        assert "Los miembros de Medi-Cal no pagan copago." in text
    for in_network in (ORTHO_A, ORTHO_B, ORTHO_C):
        assert in_network.display_name not in text


@pytest.mark.parametrize("language", LANGUAGES)
def test_out_of_network_member_notice_says_the_provider_must_not_bill(language: Language) -> None:
    member = flat(
        render(context("approval-member", language, outcome=Outcome.APPROVED_OUT_OF_NETWORK)).text
    )
    provider = flat(
        render(
            context("approval-requester", language, outcome=Outcome.APPROVED_OUT_OF_NETWORK)
        ).text
    )

    assert {
        "en": "the provider bills us, not you",
        "es": "el proveedor nos cobra a nosotros, no a usted",
    }[language] in member
    assert {"en": "must not bill the member", "es": "no debe cobrarle al miembro"}[
        language
    ] in provider


# -- every kind, every language ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "language"), KIND_AND_LANGUAGE)
def test_every_notice_is_written_in_its_language(kind: NoticeKind, language: Language) -> None:
    notice = render(context(kind, language))

    assert notice.language == language
    assert notice.title and notice.text.startswith(notice.title + "\n")
    assert f'<html lang="{language}">' in notice.html
    text = flat(notice.text)
    for phrase in ONLY_IN[language]:
        assert phrase in text
    for phrase in ONLY_IN[other(language)]:
        assert phrase not in text
    assert PLAN.phone in text
    assert "Maria Lopez" in text and "Task/7d1c2b9e" in text
    assert {"en": "January 26, 2027", "es": "26 de enero de 2027"}[language] in text


@pytest.mark.parametrize(("kind", "language"), KIND_AND_LANGUAGE)
def test_html_escapes_every_value(kind: NoticeKind, language: Language) -> None:
    overrides: dict[str, object] = {"member_display_name": MALICIOUS}
    if kind.startswith("denial-"):
        overrides["reason_text"] = "Denied <img src=x onerror=alert(1)>."
    else:
        overrides["providers"] = (NoticeProvider("<b>Dr. Evil</b>", "Surgery & More", "A&B", None),)
    notice = render(context(kind, language, **overrides))

    assert "<script>" not in notice.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Maria" in notice.html
    assert "<img" not in notice.html and "<b>Dr. Evil" not in notice.html
    if kind.startswith("approval-"):
        assert "&lt;b&gt;Dr. Evil&lt;/b&gt;, Surgery &amp; More, A&amp;B" in notice.html
    # The plain text is not HTML: it keeps the value as given.
    assert MALICIOUS in notice.text


@pytest.mark.parametrize(("kind", "language"), KIND_AND_LANGUAGE)
def test_html_carries_the_same_content_as_the_text(kind: NoticeKind, language: Language) -> None:
    notice = render(context(kind, language))
    html_text = re.sub(r"<style>.*?</style>|<title>.*?</title>", " ", notice.html, flags=re.S)
    html_text = flat(re.sub(r"<br>", " ", re.sub(r"<[^>]+>", " ", html_text)))

    assert unwrapped(html.unescape(html_text)) == text_without_underlines(notice).replace("- ", "")


@pytest.mark.parametrize(("kind", "language"), KIND_AND_LANGUAGE)
def test_pdf_opens_and_says_what_the_text_says(kind: NoticeKind, language: Language) -> None:
    outcome = Outcome.DENIED if kind.startswith("denial-") else Outcome.APPROVED_OUT_OF_NETWORK
    notice = render(context(kind, language, outcome=outcome))

    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))
    assert len(reader.pages) > 0
    assert reader.metadata is not None and reader.metadata.title == notice.title
    assert pdf_text(notice) == text_without_underlines(notice)


@pytest.mark.parametrize("language", LANGUAGES)
def test_pdf_contains_the_key_denial_sentences(language: Language) -> None:
    notice = render(context("denial-member", language))
    pdf = pdf_text(notice)

    for element, phrase in DENIAL_MEMBER_ELEMENTS[language].items():
        assert phrase in pdf, element
    assert {"en": "March 27, 2027", "es": "27 de marzo de 2027"}[language] in pdf
    assert {"en": "February 5, 2027", "es": "5 de febrero de 2027"}[language] in pdf


def test_pdf_prints_names_outside_latin1_without_failing() -> None:
    notice = render(context("denial-member", "en", member_display_name="Nguyễn Thị 王"))

    assert "To: Nguyễn Thị 王" in notice.text
    assert "To: Nguyễn Thị王" in pdf_text(notice)  # as unwrapped() joins Chinese


def test_a_long_notice_runs_onto_more_pages_with_page_numbers() -> None:
    many = tuple(
        NoticeProvider(f"Dr. Provider {n}", "Orthopaedic Surgery", "Valley Orthopaedic Group", None)
        for n in range(80)
    )
    notice = render(context("approval-member", "es", providers=many))
    reader = pypdf.PdfReader(io.BytesIO(notice.pdf))

    assert len(reader.pages) > 1
    assert f"Página 1 de {len(reader.pages)}" in reader.pages[0].extract_text()
    assert pdf_text(notice) == text_without_underlines(notice)


def test_rendering_is_deterministic() -> None:
    first = render(context("denial-member", "es"))
    second = render(context("denial-member", "es"))

    assert first == second


def test_a_value_cannot_pose_as_markup() -> None:
    notice = render(
        context(
            "denial-member",
            "en",
            member_display_name="# Fake title",
            reason_text="## Fake heading\n- fake item\n| fake line",
        )
    )

    assert notice.title == "Notice of Action: we denied your request for a second opinion"
    assert "<h2>Fake heading" not in notice.html
    assert "<li>fake item" not in notice.html
    assert "## Fake heading - fake item | fake line" in notice.text
    assert "To: # Fake title" in notice.text
    assert "\ue000" not in notice.text + notice.html
