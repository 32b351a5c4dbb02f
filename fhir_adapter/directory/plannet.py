"""Read Da Vinci Plan-Net directory resources into Providers (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_adapter.codes import (
    ENDPOINT_CONNECTION_SYSTEM,
    NEW_PATIENTS_EXTENSION,
)
from fhir_adapter.fhir.dates import period_range
from fhir_adapter.fhir.elements import (
    display_name,
    npi_of,
    role_networks,
    specialties,
    specialty_names,
)
from fhir_adapter.policy.facts import Provider


def is_in_network(role: Mapping[str, Any], network: str, today: datetime) -> bool:
    """Contract §5: active, a period covering today (or none), and network-reference -> the network."""
    if role.get("active") is False:
        return False
    period = role.get("period")
    if isinstance(period, dict):
        span = period_range(period)
        if span and not (span[0] <= today <= span[1]):
            return False
    network_id = network.rsplit("/", 1)[-1]
    return any(
        ref == network or ref.endswith(f"Organization/{network_id}") for ref in role_networks(role)
    )


def provider_from_role(
    role: Mapping[str, Any],
    *,
    role_url: str,
    resolve: Mapping[str, Mapping[str, Any]],
    network: str,
    today: datetime,
) -> Provider:
    """A Provider from a PractitionerRole; `resolve` maps reference strings (as written in the role)
    to the included Practitioner and Endpoint resources."""
    practitioner_ref = (role.get("practitioner") or {}).get("reference")
    practitioner = resolve.get(practitioner_ref) if practitioner_ref else None
    endpoint = None
    for ref in role.get("endpoint") or []:
        candidate = resolve.get(ref.get("reference", ""))
        if candidate and _is_fhir_rest(candidate) and candidate.get("status", "active") == "active":
            endpoint = candidate.get("address")
            break
    organization = _resolved(role.get("organization"), resolve)
    locations = [
        loc for loc in (_resolved(ref, resolve) for ref in role.get("location") or []) if loc
    ]
    location = locations[0] if locations else None
    return Provider(
        role_reference=role_url,
        specialties=specialties(role),
        practitioner_reference=_absolute(practitioner_ref, role_url),
        npi=npi_of(practitioner),
        display=display_name(practitioner),
        organization_reference=_absolute(
            (role.get("organization") or {}).get("reference"), role_url
        ),
        in_network=is_in_network(role, network, today),
        fhir_endpoint=endpoint,
        specialty_names=specialty_names(role),
        organization_name=_text((organization or {}).get("name")),
        address=address_lines(location) or address_lines(organization),
        phone=phone_of(role) or phone_of(location) or phone_of(organization),
        accepting_new_patients=accepting_new_patients(role),
        languages=languages(practitioner),
        position=position_of(location),
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _resolved(reference: Any, resolve: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ref = reference.get("reference") if isinstance(reference, dict) else None
    return resolve.get(ref) if isinstance(ref, str) else None


def address_lines(holder: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The first address as printable lines: `text`, or its lines and `City, ST 99999`."""
    raw = (holder or {}).get("address")
    addresses = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    for address in addresses:
        if not isinstance(address, dict):
            continue
        if address.get("text"):
            return tuple(str(address["text"]).splitlines())
        lines = [str(line) for line in address.get("line") or []]
        place = ", ".join(str(address[k]) for k in ("city", "state") if address.get(k))
        last = " ".join(p for p in (place, str(address.get("postalCode") or "")) if p)
        if lines or last:
            return (*lines, last) if last else tuple(lines)
    return ()


def phone_of(holder: Mapping[str, Any] | None) -> str | None:
    for point in (holder or {}).get("telecom") or []:
        if point.get("system") == "phone" and point.get("value"):
            return str(point["value"])
    return None


def accepting_new_patients(role: Mapping[str, Any]) -> bool | None:
    """Plan-Net `newpatients` (acceptingPatients: newpt yes; nopt / existptonly no); None when
    the directory does not say."""
    for extension in role.get("extension") or []:
        if extension.get("url") != NEW_PATIENTS_EXTENSION:
            continue
        for part in extension.get("extension") or []:
            if part.get("url") != "acceptingPatients":
                continue
            if isinstance(part.get("valueBoolean"), bool):
                return bool(part["valueBoolean"])
            codes = {
                c.get("code") for c in (part.get("valueCodeableConcept") or {}).get("coding") or []
            }
            if codes & {"newpt", "existptfam"}:
                return True
            if codes & {"nopt", "existptonly"}:
                return False
    return None


def languages(practitioner: Mapping[str, Any] | None) -> frozenset[str]:
    """Practitioner.communication as primary language tags ("es" for "es-MX")."""
    return frozenset(
        str(coding["code"]).split("-")[0].lower()
        for concept in (practitioner or {}).get("communication") or []
        for coding in (concept.get("coding") or [] if isinstance(concept, dict) else [])
        if isinstance(coding.get("code"), str)
    )


def position_of(location: Mapping[str, Any] | None) -> tuple[float, float] | None:
    position = (location or {}).get("position")
    if not isinstance(position, dict):
        return None
    latitude, longitude = position.get("latitude"), position.get("longitude")
    if isinstance(latitude, int | float) and isinstance(longitude, int | float):
        return float(latitude), float(longitude)
    return None


def _is_fhir_rest(endpoint: Mapping[str, Any]) -> bool:
    connection = endpoint.get("connectionType") or {}
    return (
        connection.get("system") == ENDPOINT_CONNECTION_SYSTEM
        and connection.get("code") == "hl7-fhir-rest"
    )


def _absolute(reference: str | None, role_url: str) -> str | None:
    """A relative reference made absolute against the directory base the role came from."""
    if not reference or "://" in reference:
        return reference
    base = role_url.rsplit("/PractitionerRole/", 1)[0]
    return f"{base}/{reference}"
