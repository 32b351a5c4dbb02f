"""Who asked, as HSC 1383.15 words it (pure): the member, an authorized representative acting for
the member, or a professional treating the member; and what the request shows about the member."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhir_adapter.fhir.elements import reference_type
from fhir_adapter.policy.facts import RequesterKind

GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"


def requester_kind(reference: str | None) -> RequesterKind:
    kind = [reference_type(reference)]
    if kind == ["Patient"]:
        return "member"
    if kind in (["Practitioner"], ["PractitionerRole"]):
        return "professional"
    if kind == ["RelatedPerson"]:
        return "representative"
    return "other"


def _reference(value: Any) -> str | None:
    return value.get("reference") if isinstance(value, dict) else None


def related_person_patient(related: Mapping[str, Any] | None) -> str | None:
    """The Patient an active RelatedPerson acts for (RelatedPerson.patient)."""
    if not related or related.get("active") is False:
        return None
    return _reference(related.get("patient"))


def treating_references(
    care_teams: Iterable[Mapping[str, Any]], conditions: Iterable[Mapping[str, Any]]
) -> list[str]:
    """The professionals the member's records name as treating them: active care team members,
    and who asserted or recorded the conditions the request is about."""
    found: list[str] = []
    for team in care_teams:
        if team.get("status") in ("inactive", "entered-in-error"):
            continue
        for participant in team.get("participant") or []:
            if ref := _reference(participant.get("member")):
                found.append(ref)
    for condition in conditions:
        for element in ("asserter", "recorder"):
            if ref := _reference(condition.get(element)):
                found.append(ref)
    return found


def preferred_language(patient: Mapping[str, Any] | None) -> str | None:
    """Patient.communication: the preferred language's code, else the first one's."""
    communications = [c for c in (patient or {}).get("communication") or [] if isinstance(c, dict)]
    communications.sort(key=lambda c: c.get("preferred") is not True)
    for communication in communications:
        for coding in (communication.get("language") or {}).get("coding") or []:
            if isinstance(coding.get("code"), str):
                code: str = coding["code"]
                return code
    return None


def address_position(holder: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """(latitude, longitude) of the first address carrying the geolocation extension."""
    for address in (holder or {}).get("address") or []:
        position = geolocation(address)
        if position:
            return position
    return None


def geolocation(element: Mapping[str, Any]) -> tuple[float, float] | None:
    for extension in element.get("extension") or []:
        if extension.get("url") != GEOLOCATION:
            continue
        parts = {p.get("url"): p.get("valueDecimal") for p in extension.get("extension") or []}
        latitude, longitude = parts.get("latitude"), parts.get("longitude")
        if isinstance(latitude, int | float) and isinstance(longitude, int | float):
            return float(latitude), float(longitude)
    return None
