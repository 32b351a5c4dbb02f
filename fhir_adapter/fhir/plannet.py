"""Read Da Vinci Plan-Net directory resources into Providers (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fhir_adapter.fhir.dates import period_range
from fhir_adapter.policy.facts import Provider
from fhir_adapter.workflow.codes import (
    ENDPOINT_CONNECTION_SYSTEM,
    NETWORK_REFERENCE_EXTENSION,
    NPI,
    NUCC,
)


def role_networks(role: Mapping[str, Any]) -> set[str]:
    """The Network Organizations a PractitionerRole's `network-reference` extensions name."""
    return {
        ext["valueReference"]["reference"]
        for ext in role.get("extension") or []
        if ext.get("url") == NETWORK_REFERENCE_EXTENSION
        and isinstance(ext.get("valueReference"), dict)
        and isinstance(ext["valueReference"].get("reference"), str)
    }


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


def specialties(role: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        coding["code"]
        for concept in role.get("specialty") or []
        for coding in concept.get("coding") or []
        if coding.get("system") == NUCC and isinstance(coding.get("code"), str)
    )


def npi_of(practitioner: Mapping[str, Any] | None) -> str | None:
    for identifier in (practitioner or {}).get("identifier") or []:
        if identifier.get("system") == NPI and isinstance(identifier.get("value"), str):
            value: str = identifier["value"]
            return value
    return None


def display_name(practitioner: Mapping[str, Any] | None) -> str | None:
    """A provider's name as the directory gives it (providers' names are directory data, not PHI)."""
    for name in (practitioner or {}).get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return None


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
        specialty_names=tuple(
            str(coding["display"])
            for concept in role.get("specialty") or []
            for coding in concept.get("coding") or []
            if coding.get("system") == NUCC and coding.get("display")
        ),
    )


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
