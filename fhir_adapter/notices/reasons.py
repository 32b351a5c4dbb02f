"""The standard denial reasons as sentences for the member or the requester, per language (pure).

A notice prints `NoticeContext.reason_text`; these are the default sentences for it. A reviewer's
denial (`reviewer-denied`) is not specific by itself: add the reviewer's own explanation to it.
"""

from __future__ import annotations

from fhir_adapter.codes import DENIAL_TEXT, DenialReason
from fhir_adapter.notices.model import Audience, Language

_MEMBER_EN: dict[DenialReason, str] = {
    DenialReason.COVERAGE_INACTIVE: (
        "Your Medi-Cal coverage with us was not active on the date of your request."
    ),
    DenialReason.NOT_PLAN_MEMBER: (
        "The coverage shown on your request is not coverage with our plan."
    ),
    DenialReason.REQUESTER_NOT_ELIGIBLE: (
        "A second opinion can be requested by you, or by a provider in our network who is treating "
        "you (your primary care provider or the provider whose opinion you question). The request "
        "came from someone else. You can ask for the second opinion yourself."
    ),
    DenialReason.REQUESTER_NOT_PARTICIPATING: (
        "The provider who asked for the second opinion is not a provider in our network. You can "
        "ask for the second opinion yourself, or ask your primary care provider to ask for it."
    ),
    DenialReason.DEADLINE_EXPIRED: (
        "We did not make a decision within the time the law allows. The law treats this as a "
        "denial, so you can appeal it."
    ),
    DenialReason.REVIEWER_DENIED: "A doctor who reviewed your request denied it.",
}

_MEMBER_ES: dict[DenialReason, str] = {
    DenialReason.COVERAGE_INACTIVE: (
        "Su cobertura de Medi-Cal con nosotros no estaba activa en la fecha de su solicitud."
    ),
    DenialReason.NOT_PLAN_MEMBER: (
        "La cobertura que aparece en su solicitud no es una cobertura de nuestro plan."
    ),
    DenialReason.REQUESTER_NOT_ELIGIBLE: (
        "Pueden pedir una segunda opinión usted o un proveedor de nuestra red que le da tratamiento "
        "(su proveedor de atención primaria o el proveedor cuya opinión usted pone en duda). La "
        "solicitud la hizo otra persona. Usted puede pedir la segunda opinión directamente."
    ),
    DenialReason.REQUESTER_NOT_PARTICIPATING: (
        "El proveedor que pidió la segunda opinión no es un proveedor de nuestra red. Usted puede "
        "pedir la segunda opinión directamente o pedirle a su proveedor de atención primaria que "
        "la pida."
    ),
    DenialReason.DEADLINE_EXPIRED: (
        "No tomamos una decisión dentro del plazo que permite la ley. La ley considera esto una "
        "negación, así que usted puede apelarla."
    ),
    DenialReason.REVIEWER_DENIED: "Un médico que revisó su solicitud la negó.",
}

_REQUESTER_ES: dict[DenialReason, str] = {
    DenialReason.COVERAGE_INACTIVE: (
        "La cobertura del miembro no estaba activa en la fecha de la solicitud."
    ),
    DenialReason.NOT_PLAN_MEMBER: "La cobertura presentada no es una cobertura de este plan.",
    DenialReason.REQUESTER_NOT_ELIGIBLE: (
        "Una segunda opinión la puede pedir el miembro o un profesional participante que le da "
        "tratamiento (el proveedor de atención primaria del miembro o el proveedor cuya opinión se "
        "pone en duda); quien la pidió no es ninguno de ellos."
    ),
    DenialReason.REQUESTER_NOT_PARTICIPATING: (
        "El profesional que hizo la solicitud no es un proveedor participante (de la red) del plan."
    ),
    DenialReason.DEADLINE_EXPIRED: (
        "No se tomó una decisión dentro del plazo permitido; la ley lo considera una negación."
    ),
    DenialReason.REVIEWER_DENIED: "Un revisor clínico negó la solicitud.",
}

_SENTENCES: dict[tuple[Language, Audience], dict[DenialReason, str]] = {
    ("en", "member"): _MEMBER_EN,
    ("en", "requester"): DENIAL_TEXT,
    ("es", "member"): _MEMBER_ES,
    ("es", "requester"): _REQUESTER_ES,
}


def reason_sentence(reason: DenialReason, language: Language, audience: Audience) -> str:
    """The plain-language sentence for a standard denial reason, addressed to `audience`."""
    return _SENTENCES[(language, audience)][reason]
