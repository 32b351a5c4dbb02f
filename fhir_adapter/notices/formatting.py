"""Dates as a letter writes them, per language, without the system locale (pure)."""

from __future__ import annotations

from datetime import date

from fhir_adapter.notices.model import Language

_MONTHS: dict[Language, tuple[str, ...]] = {
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    "es": (
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ),
}


def format_date(value: date, language: Language) -> str:
    """`January 26, 2027` in English, `26 de enero de 2027` in Spanish."""
    month = _MONTHS[language][value.month - 1]
    if language == "es":
        return f"{value.day} de {month} de {value.year}"
    return f"{month} {value.day}, {value.year}"
