"""Which qualified providers the member is offered first (issue #10; policy III-IV): the PCP's own
medical group, then those the directory says accept new patients and speak the member's language,
then the nearest, where the directory gives locations a position. Ties keep the directory's order."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fhir_adapter.policy.facts import Provider

_EARTH_RADIUS_KM = 6371.0


def rank_providers(
    providers: Iterable[Provider],
    *,
    pcp_organization: str | None,
    member_language: str | None,
    member_position: tuple[float, float] | None,
) -> list[Provider]:
    """`providers` best first; what the directory does not say ranks after what it says well and
    before what it says badly."""
    language = (member_language or "").split("-")[0].lower() or None

    def key(provider: Provider) -> tuple[int, int, int, float]:
        same_group = bool(pcp_organization and provider.organization_reference == pcp_organization)
        accepting = {True: 0, None: 1, False: 2}[provider.accepting_new_patients]
        speaks = (
            0
            if language is None or language in provider.languages
            else 1
            if not provider.languages
            else 2
        )
        distance = (
            distance_km(member_position, provider.position)
            if member_position and provider.position
            else math.inf
        )
        return (0 if same_group else 1, accepting, speaks, distance)

    return sorted(providers, key=key)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine) between two (latitude, longitude) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(h))
