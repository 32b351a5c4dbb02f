"""Who owns a Subscription (issue #16): the client that wrote it, with the scopes and patient of
the token it wrote it with, kept as server-set `meta.tag`s. Owners alone see their Subscriptions,
and a notification carries only what its owner may read (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_adapter.access.scopes import Access, parse_scopes

OWNER_SYSTEM = "https://fhir-adapter.org/fhir/CodeSystem/subscription-owner"
_SCOPE_SYSTEM = "https://fhir-adapter.org/fhir/CodeSystem/subscription-owner-scope"
_PATIENT_SYSTEM = "https://fhir-adapter.org/fhir/CodeSystem/subscription-owner-patient"
_REGISTERED_SYSTEM = "https://fhir-adapter.org/fhir/CodeSystem/subscription-owner-registered"
_SYSTEMS = (OWNER_SYSTEM, _SCOPE_SYSTEM, _PATIENT_SYSTEM, _REGISTERED_SYSTEM)


def with_owner(content: Mapping[str, Any], access: Access) -> dict[str, Any]:
    """`content` owned by `access`: any owner tags the client sent are replaced."""
    meta = dict(content.get("meta") or {})
    tags = [
        t
        for t in meta.get("tag") or []
        if not (isinstance(t, dict) and t.get("system") in _SYSTEMS)
    ]
    tags.append({"system": OWNER_SYSTEM, "code": access.client_id})
    if access.scope:
        tags.append({"system": _SCOPE_SYSTEM, "code": access.scope})
    if access.patient:
        tags.append({"system": _PATIENT_SYSTEM, "code": access.patient})
    if access.registered:  # removing the client ends what its Subscriptions carry
        tags.append({"system": _REGISTERED_SYSTEM, "code": "true"})
    meta["tag"] = tags
    return {**content, "meta": meta}


def owner_of(content: Mapping[str, Any]) -> Access | None:
    """The owner's access as it was when the Subscription was written; None for one written by
    the adapter itself (or before owners were recorded)."""
    found = {
        t.get("system"): str(t.get("code"))
        for t in (content.get("meta") or {}).get("tag") or []
        if isinstance(t, dict) and t.get("system") in _SYSTEMS
    }
    if OWNER_SYSTEM not in found:
        return None
    return Access(
        found[OWNER_SYSTEM],
        parse_scopes(found.get(_SCOPE_SYSTEM, "")),
        found.get(_PATIENT_SYSTEM),
        registered=found.get(_REGISTERED_SYSTEM) == "true",
    )


def owned_by(content: Mapping[str, Any], client_id: str) -> bool:
    owner = owner_of(content)
    return owner is not None and owner.client_id == client_id


def without_headers(content: dict[str, Any]) -> dict[str, Any]:
    """`channel.header` is write-only: it holds the subscriber's credentials."""
    channel = content.get("channel")
    if not isinstance(channel, dict) or "header" not in channel:
        return content
    return {**content, "channel": {k: v for k, v in channel.items() if k != "header"}}
