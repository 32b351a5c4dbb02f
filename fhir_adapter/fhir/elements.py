"""FHIR element helpers: resource keys, references, identifiers, NPIs and specialties (pure).

The one place that reads these elements, so that services, the directory adapter, the review
workspace and the demo do not each re-implement them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from fhir_adapter.codes import NETWORK_REFERENCE_EXTENSION, NPI, NUCC
from fhir_adapter.fhir.references import parse_reference


class ResourceKey(NamedTuple):
    """A resource on this server: `Type/id`. A `(type, id)` pair, so `tx.resources.read(*key)` and
    `tx.resources.read_many(keys)` take it as it is; `str(key)` is `Type/id`."""

    type: str
    id: str

    @classmethod
    def parse(cls, key: str) -> ResourceKey:
        """`Type/id` (also the tail of an absolute URL or a `Type/id/_history/n` location)."""
        path = key.split("?", 1)[0].split("/_history/", 1)[0]
        kind, _, id = path.rpartition("/")
        kind = kind.rpartition("/")[2]
        if not kind or not id:
            raise ValueError(f"not a Type/id resource key: {key!r}")
        return cls(kind, id)

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> ResourceKey:
        return cls(str(resource["resourceType"]), str(resource["id"]))

    def __str__(self) -> str:
        return f"{self.type}/{self.id}"


def local_key(reference: str | None, base_url: str | None = None) -> ResourceKey | None:
    """The key of a reference to this server (relative, or absolute under `base_url`), else None."""
    if not reference:
        return None
    key = parse_reference(reference, base_url=base_url).local_key
    return ResourceKey.parse(key) if key else None


def reference_of(value: Any) -> str | None:
    """`Reference.reference` of a Reference element (None for anything else)."""
    return value.get("reference") if isinstance(value, dict) else None


def reference_type(reference: str | None) -> str | None:
    """The resource type a literal reference names (`Practitioner/1`, an absolute URL), or None
    (a conditional `Practitioner?identifier=...` names no resource yet)."""
    if not reference:
        return None
    parts = reference.split("?")[0].split("/")
    return parts[-2] if len(parts) >= 2 else None


def identifier_value(resource: Mapping[str, Any] | None, system: str) -> str | None:
    """The value of the first `identifier` with this `system`."""
    for identifier in (resource or {}).get("identifier") or []:
        if identifier.get("system") == system and isinstance(identifier.get("value"), str):
            value: str = identifier["value"]
            return value
    return None


def npi_of(resource: Mapping[str, Any] | None) -> str | None:
    """A Practitioner's (or Organization's) NPI."""
    return identifier_value(resource, NPI)


def codes_in(concepts: Any, system: str | None, *, unsystemed: bool = False) -> list[str]:
    """The codes of `system` (None: of any system) in a CodeableConcept or a list of them, in
    order; `unsystemed` also takes codings that name no system."""
    if isinstance(concepts, dict):
        concepts = [concepts]
    return [
        coding["code"]
        for concept in concepts or []
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
        if isinstance(coding, dict)
        and isinstance(coding.get("code"), str)
        and coding["code"]
        and (
            system is None
            or coding.get("system") == system
            or (unsystemed and coding.get("system") is None)
        )
    ]


def specialties(role: Mapping[str, Any] | None) -> frozenset[str]:
    """A PractitionerRole's NUCC specialty codes."""
    return frozenset(codes_in((role or {}).get("specialty"), NUCC))


def specialty_names(role: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The displays of a PractitionerRole's NUCC specialties, as the directory gives them."""
    return tuple(
        str(coding["display"])
        for concept in (role or {}).get("specialty") or []
        for coding in concept.get("coding") or []
        if coding.get("system") == NUCC and coding.get("display")
    )


def specialty_search(codes: Iterable[str]) -> str:
    """A `specialty` search value: `system|code` for each code, comma-separated (any of them)."""
    return ",".join(f"{NUCC}|{code}" for code in sorted(set(codes)))


def display_name(person: Mapping[str, Any] | None) -> str | None:
    """A person's name: `text`, else prefix, given and family names (providers' names are
    directory data, not PHI; callers decide what they may show)."""
    for name in (person or {}).get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
        text = " ".join(p for p in parts if p)
        if text:
            return text
    return None


def role_networks(role: Mapping[str, Any]) -> set[str]:
    """The Network Organizations a PractitionerRole's Plan-Net `network-reference` extensions name."""
    return {
        ext["valueReference"]["reference"]
        for ext in role.get("extension") or []
        if ext.get("url") == NETWORK_REFERENCE_EXTENSION
        and isinstance(ext.get("valueReference"), dict)
        and isinstance(ext["valueReference"].get("reference"), str)
    }
