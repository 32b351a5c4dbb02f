# ruff: noqa: RUF001  (taglines in other scripts use their own punctuation and letters)
"""Per-language catalogs for what the letters print besides their templates (pure).

Taglines: 42 CFR 438.10(d)(2) requires taglines in the prevalent non-English languages on every
written member notice; DHCS publishes the statewide threshold languages and its tagline texts
(DHCS "Language Assistance Taglines"; regulatory.md §5.6). A tagline ships here only when we could
write it correctly and the packaged fonts can print its script; the others stay absent (never
invented) and `fhir-adapter notices check` lists them, so the plan fills them from its approved
translations (FHIR_ADAPTER_NOTICE_TAGLINES_FILE).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fhir_adapter.notices.model import Language


@dataclass(frozen=True, slots=True)
class ThresholdLanguage:
    code: str  # BCP-47 primary subtag (ISO 639-3 when there is no 639-1 code)
    name: str  # in English, for reports


# DHCS statewide threshold and concentration languages for Medi-Cal managed care (DHCS
# "Threshold and Concentration Languages" data and its tagline set), besides English.
THRESHOLD_LANGUAGES: tuple[ThresholdLanguage, ...] = (
    ThresholdLanguage("es", "Spanish"),
    ThresholdLanguage("ar", "Arabic"),
    ThresholdLanguage("hy", "Armenian"),
    ThresholdLanguage("km", "Cambodian (Khmer)"),
    ThresholdLanguage("zh", "Chinese"),
    ThresholdLanguage("fa", "Farsi"),
    ThresholdLanguage("hi", "Hindi"),
    ThresholdLanguage("hmn", "Hmong"),
    ThresholdLanguage("ja", "Japanese"),
    ThresholdLanguage("ko", "Korean"),
    ThresholdLanguage("lo", "Lao"),
    ThresholdLanguage("ium", "Mien"),
    ThresholdLanguage("pa", "Punjabi"),
    ThresholdLanguage("ru", "Russian"),
    ThresholdLanguage("tl", "Tagalog"),
    ThresholdLanguage("th", "Thai"),
    ThresholdLanguage("uk", "Ukrainian"),
    ThresholdLanguage("vi", "Vietnamese"),
)

# The English tagline (DHCS wording, shortened to what the plan offers): {phone} and {tty} are
# the plan's numbers.
ENGLISH_TAGLINE = (
    "ATTENTION: If you need help in your language, call {phone} (TTY: {tty}). Aids and services "
    "for people with disabilities, like documents in braille and large print, are also "
    "available. These services are free."
)

# Translations of ENGLISH_TAGLINE, following the DHCS tagline texts.
BUILT_IN_TAGLINES: Mapping[str, str] = {
    "es": (
        "ATENCIÓN: Si necesita ayuda en su idioma, llame al {phone} (TTY: {tty}). También "
        "ofrecemos ayudas y servicios para personas con discapacidades, como documentos en "
        "braille y con letras grandes. Estos servicios son gratuitos."
    ),
    "vi": (
        "CHÚ Ý: Nếu quý vị cần trợ giúp bằng ngôn ngữ của mình, vui lòng gọi số {phone} "
        "(TTY: {tty}). Chúng tôi cũng hỗ trợ và cung cấp dịch vụ cho người khuyết tật, như tài "
        "liệu bằng chữ nổi Braille và chữ khổ lớn. Các dịch vụ này đều miễn phí."
    ),
    "zh": (
        "請注意：如果您需要以您的母語獲得幫助，請致電 {phone} (TTY: {tty})。"
        "另外還提供針對殘疾人士的幫助和服務，例如盲文和大字體閱讀。這些服務都是免費的。"
    ),
    "ja": (
        "注意：日本語での対応が必要な場合は {phone} (TTY: {tty}) へお電話ください。"
        "点字の資料や文字の拡大表示など、障がいをお持ちの方のためのサービスも用意しています。"
        "これらのサービスは無料で提供しています。"
    ),
    "ru": (
        "ВНИМАНИЕ! Если вам нужна помощь на вашем родном языке, звоните по номеру {phone} "
        "(линия TTY: {tty}). Также предоставляются средства и услуги для людей с ограниченными "
        "возможностями, например документы крупным шрифтом или шрифтом Брайля. Эти услуги "
        "предоставляются бесплатно."
    ),
    "uk": (
        "УВАГА! Якщо вам потрібна допомога вашою мовою, телефонуйте за номером {phone} "
        "(TTY: {tty}). Також доступні засоби та послуги для людей з інвалідністю, наприклад "
        "документи шрифтом Брайля й великим шрифтом. Ці послуги безкоштовні."
    ),
    "tl": (
        "PAUNAWA: Kung kailangan mo ng tulong sa iyong wika, tumawag sa {phone} (TTY: {tty}). "
        "Mayroon ding mga tulong at serbisyo para sa mga taong may kapansanan, gaya ng mga "
        "dokumento sa braille at malaking print. Libre ang mga serbisyong ito."
    ),
}

# Specialty names as the directory gives them (NUCC displays) in each template language.
SPECIALTY_NAMES: Mapping[Language, Mapping[str, str]] = {
    "es": {
        "Allergy & Immunology": "Alergia e inmunología",
        "Cardiology": "Cardiología",
        "Cardiovascular Disease": "Enfermedades cardiovasculares",
        "Dermatology": "Dermatología",
        "Endocrinology, Diabetes & Metabolism": "Endocrinología, diabetes y metabolismo",
        "Family Medicine": "Medicina familiar",
        "Gastroenterology": "Gastroenterología",
        "General Practice": "Medicina general",
        "Hand Surgery": "Cirugía de la mano",
        "Hematology & Oncology": "Hematología y oncología",
        "Internal Medicine": "Medicina interna",
        "Medical Oncology": "Oncología médica",
        "Nephrology": "Nefrología",
        "Neurology": "Neurología",
        "Obstetrics & Gynecology": "Obstetricia y ginecología",
        "Ophthalmology": "Oftalmología",
        "Orthopaedic Surgery": "Cirugía ortopédica",
        "Otolaryngology": "Otorrinolaringología",
        "Pediatric Hematology-Oncology": "Hematología y oncología pediátricas",
        "Pediatrics": "Pediatría",
        "Psychiatry": "Psiquiatría",
        "Pulmonary Disease": "Neumología",
        "Rheumatology": "Reumatología",
        "Surgery": "Cirugía",
        "Urology": "Urología",
    },
}


def specialty_name(name: str, language: Language) -> str:
    """`name` in `language` when the catalog has it, else as the directory wrote it."""
    if language == "en":
        return name
    return SPECIALTY_NAMES.get(language, {}).get(name, name)


def load_taglines(text: str | None) -> dict[str, str]:
    """The built-in taglines with the plan's own (a JSON object: language code -> tagline with
    `{phone}` and `{tty}`) laid over them; an empty text gives the built-in ones."""
    taglines = dict(BUILT_IN_TAGLINES)
    if text:
        extra = json.loads(text)
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise ValueError("the taglines file must be a JSON object of language code to text")
        for code, tagline in extra.items():
            tagline.format(phone="", tty="")  # raises on a placeholder we do not fill
            taglines[code.strip().lower()] = tagline
    return taglines


def missing_taglines(taglines: Mapping[str, str]) -> list[ThresholdLanguage]:
    """Threshold languages that have no tagline yet."""
    return [lang for lang in THRESHOLD_LANGUAGES if lang.code not in taglines]


def catalog_gaps(
    taglines: Mapping[str, str],
    *,
    printable: Callable[[str], bool],
    specialty_names: Iterable[str] = (),
    plan_hours_translated: Mapping[Language, bool] | None = None,
) -> list[str]:
    """What the catalogs still lack, one line each: threshold languages without a tagline,
    taglines the packaged fonts cannot print, specialty names and plan texts without a
    translation in a template language (`fhir-adapter notices check`)."""
    gaps = [f"tagline missing: {lang.code} ({lang.name})" for lang in missing_taglines(taglines)]
    gaps += [
        f"tagline not printable with the packaged fonts: {code}"
        for code, text in sorted(taglines.items())
        if not printable(text)
    ]
    for language in (lang for lang in SPECIALTY_NAMES if lang != "en"):
        gaps += [
            f"specialty name missing in {language}: {name}"
            for name in sorted(set(specialty_names))
            if name not in SPECIALTY_NAMES[language]
        ]
    gaps += [
        f"plan hours have no {language} text (FHIR_ADAPTER_PLAN_HOURS_{language.upper()})"
        for language, translated in (plan_hours_translated or {}).items()
        if not translated
    ]
    return gaps
