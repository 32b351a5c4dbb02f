"""The notice language from a FHIR Patient's `communication`: preferred first, else English (pure).

Only English and Spanish notices exist. The first entry (preferred ones first, then the others in
their order) that names one of them wins; a member whose preferred language is neither can be found
with `preferred_language_code()`, so the caller can arrange an interpreter or a translation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

from fhir_adapter.notices.model import Language

DEFAULT_LANGUAGE: Language = "en"

# BCP-47 (urn:ietf:bcp:47) primary subtags, and the ISO 639-2 codes some systems send instead;
# the coding system is not checked, as senders often leave it out.
_CODES: dict[str, Language] = {"en": "en", "eng": "en", "es": "es", "spa": "es"}
# CodeableConcept.text or coding.display when a sender gives no code we know.
_NAMES: dict[str, Language] = {
    "english": "en",
    "ingles": "en",
    "spanish": "es",
    "espanol": "es",
    "castellano": "es",
}


def choose_language(patient: Mapping[str, Any] | None) -> Language:
    """The language to write the member's notices in: `es` or `en` (the default)."""
    for entry in _entries_in_preference_order(patient):
        language = _supported_language(entry)
        if language:
            return language
    return DEFAULT_LANGUAGE


LARGE_PRINT_URL = "https://fhir-adapter.org/fhir/StructureDefinition/notice-large-print"


def choose_notice_language(patient: Mapping[str, Any] | None) -> tuple[Language, str | None]:
    """The template language for the member's letters, and the member's most preferred
    language code when it is not that one (a translation is then owed: the letter goes out in
    the template language with taglines, never silently in English alone)."""
    language = choose_language(patient)
    preferred = next(iter(_entries_in_preference_order(patient)), None)
    if preferred is None or _supported_language(preferred) == language:
        return language, None
    code = next(
        (
            str(c["code"]).strip().lower().replace("_", "-")
            for c in _codings(preferred)
            if isinstance(c.get("code"), str) and c["code"].strip()
        ),
        None,
    )
    if code is None:
        concept = preferred.get("language")
        text = concept.get("text") if isinstance(concept, Mapping) else None
        code = str(text).strip().lower() if isinstance(text, str) and text.strip() else None
    return language, code


def wants_large_print(patient: Mapping[str, Any] | None) -> bool:
    """The member asked for large print: the notice-large-print extension (profiles/) on the
    Patient or on one of its `communication` entries."""
    if not isinstance(patient, Mapping):
        return False
    holders = [patient, *(e for e in patient.get("communication") or [] if isinstance(e, Mapping))]
    return any(
        isinstance(ext, Mapping)
        and ext.get("url") == LARGE_PRINT_URL
        and ext.get("valueBoolean") is True
        for holder in holders
        for ext in holder.get("extension") or []
    )


def preferred_language_code(patient: Mapping[str, Any] | None) -> str | None:
    """The member's most preferred language code as sent (lower-cased), supported or not."""
    for entry in _entries_in_preference_order(patient):
        for coding in _codings(entry):
            code = coding.get("code")
            if isinstance(code, str) and code.strip():
                return code.strip().lower().replace("_", "-")
    return None


def _entries_in_preference_order(patient: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    communication = patient.get("communication") if isinstance(patient, Mapping) else None
    if not isinstance(communication, list):
        return
    entries = [entry for entry in communication if isinstance(entry, Mapping)]
    # A stable sort keeps the sender's order among the preferred and among the others.
    yield from sorted(entries, key=lambda entry: entry.get("preferred") is not True)


def _codings(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    concept = entry.get("language")
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    if not isinstance(codings, list):
        return []
    return [coding for coding in codings if isinstance(coding, Mapping)]


def _supported_language(entry: Mapping[str, Any]) -> Language | None:
    for coding in _codings(entry):
        code = coding.get("code")
        if isinstance(code, str):
            primary = code.strip().lower().replace("_", "-").split("-")[0]
            if primary in _CODES:
                return _CODES[primary]
    concept = entry.get("language")
    names = [coding.get("display") for coding in _codings(entry)]
    if isinstance(concept, Mapping):
        names.append(concept.get("text"))
    for name in names:
        if isinstance(name, str):
            word = re.match(r"[a-z]+", _fold(name))
            if word and word.group() in _NAMES:
                return _NAMES[word.group()]
    return None


def _fold(text: str) -> str:
    """Lower case without accents, so `Español` and `espanol` compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))
