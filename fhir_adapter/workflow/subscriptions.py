"""R4 Subscriptions backport (rest-hook): which Subscriptions we accept, and the notification
Bundles we send them (fhir.md §3.4, §1.9) (pure)."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fhir_adapter.codes import CANONICAL, PAS
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.outcome import Issue

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
FILTER_EXTENSION = f"{BACKPORT}/StructureDefinition/backport-filter-criteria"
PAYLOAD_EXTENSION = f"{BACKPORT}/StructureDefinition/backport-payload-content"
HEARTBEAT_EXTENSION = f"{BACKPORT}/StructureDefinition/backport-heartbeat-period"
STATUS_PROFILE = f"{BACKPORT}/StructureDefinition/backport-subscription-status-r4"
DECISION_TOPIC = f"{CANONICAL}/SubscriptionTopic/second-opinion-decision"
PAS_TOPIC = f"{PAS}/SubscriptionTopic/PASSubscriptionTopic"
TOPICS = {
    DECISION_TOPIC: "ClaimResponse created or updated",
    PAS_TOPIC: "Da Vinci PAS result available",
}
_CONTENTS = {"empty", "id-only", "full-resource"}
MIN_HEARTBEAT_SECONDS = 60  # issue #16: a heartbeat every second is a flood, not a liveness check


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """The parts of a Subscription resource that matter for sending."""

    topic: str
    endpoint: str
    content: str
    headers: tuple[tuple[str, str], ...]
    filters: tuple[tuple[str, str], ...]
    heartbeat_seconds: int | None = None


def view(subscription: Mapping[str, Any]) -> SubscriptionView:
    channel = subscription.get("channel") or {}
    payload_ext = (channel.get("_payload") or {}).get("extension") or []
    content = next(
        (e.get("valueCode") for e in payload_ext if e.get("url") == PAYLOAD_EXTENSION), "id-only"
    )
    filters = []
    for ext in (subscription.get("_criteria") or {}).get("extension") or []:
        if ext.get("url") == FILTER_EXTENSION and isinstance(ext.get("valueString"), str):
            name, _, value = ext["valueString"].partition("=")
            filters.append((name.strip(), value.strip()))
    headers = []
    for header in channel.get("header") or []:
        name, _, value = str(header).partition(":")
        if name.strip() and value.strip():
            headers.append((name.strip(), value.strip()))
    heartbeat = next(
        (
            e.get("valueUnsignedInt")
            for e in channel.get("extension") or []
            if e.get("url") == HEARTBEAT_EXTENSION and isinstance(e.get("valueUnsignedInt"), int)
        ),
        None,
    )
    return SubscriptionView(
        topic=subscription.get("criteria", ""),
        endpoint=channel.get("endpoint", ""),
        content=str(content),
        headers=tuple(headers),
        filters=tuple(filters),
        heartbeat_seconds=heartbeat if heartbeat and heartbeat > 0 else None,
    )


def host_allowed(host: str, port: int | None, allowed: frozenset[str]) -> bool:
    host = host.lower().strip("[]")
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


def is_public_address(address: str) -> bool:
    """A global unicast address: not loopback, private, link-local, unspecified or reserved."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


_INET_ATON = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")


def _is_numeric_host(host: str) -> bool:
    """An address literal, including the forms resolvers accept (`2130706433`, `0x7f.1`)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return _INET_ATON.fullmatch(host) is not None
    return True


def _endpoint_issue(endpoint: str, allowed: frozenset[str], where: str) -> Issue | None:
    """Issue #16 (SSRF): https to a public host, or a host the operator allow-listed."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        host, port, parts = "", None, urlsplit("")
    if parts.scheme not in ("http", "https") or not host:
        return Issue("value", f"{where}: an https URL is required", where)
    if parts.username is not None or parts.password is not None:
        return Issue("value", f"{where}: credentials belong in channel.header, not the URL", where)
    listed = host_allowed(host, port or (443 if parts.scheme == "https" else 80), allowed)
    if parts.scheme == "http" and not listed:
        return Issue(
            "value",
            f"{where}: an https URL is required (plain http only for hosts on "
            "FHIR_ADAPTER_SUBSCRIPTION_ALLOWED_HOSTS)",
            where,
        )
    literal = host.strip("[]")
    if not listed and _is_numeric_host(literal) and not is_public_address(literal):
        return Issue(
            "value", f"{where}: the endpoint must be a public address or an allowed host", where
        )
    return None


def check_subscription(
    subscription: Mapping[str, Any], path: str, allowed_hosts: frozenset[str] = frozenset()
) -> list[Issue]:
    """What a rest-hook Subscription must say for us to serve it."""
    issues: list[Issue] = []
    subscribed = view(subscription)
    if subscribed.topic not in TOPICS:
        issues.append(
            Issue(
                "not-supported",
                f"{path}.criteria: unknown topic '{subscribed.topic}'; topics: {', '.join(TOPICS)}",
                f"{path}.criteria",
            )
        )
    issues.extend(_channel_issues(subscription, subscribed, path, allowed_hosts))
    issues.extend(_criteria_issues(subscribed, path))
    return issues


def _channel_issues(
    subscription: Mapping[str, Any],
    subscribed: SubscriptionView,
    path: str,
    allowed_hosts: frozenset[str],
) -> list[Issue]:
    """The channel: rest-hook, to an endpoint we may call, with a FHIR JSON payload we send."""
    issues: list[Issue] = []
    channel = subscription.get("channel") or {}
    if (channel.get("type") or "") != "rest-hook":
        issues.append(
            Issue(
                "not-supported",
                f"{path}.channel.type: only rest-hook is supported",
                f"{path}.channel.type",
            )
        )
    endpoint_issue = _endpoint_issue(subscribed.endpoint, allowed_hosts, f"{path}.channel.endpoint")
    if endpoint_issue is not None:
        issues.append(endpoint_issue)
    if (channel.get("payload") or "").split(";")[0].strip() not in (
        "application/fhir+json",
        "application/json",
    ):
        issues.append(
            Issue(
                "not-supported",
                f"{path}.channel.payload: application/fhir+json is the payload we send",
                f"{path}.channel.payload",
            )
        )
    if subscribed.content not in _CONTENTS:
        issues.append(
            Issue(
                "code-invalid",
                f"{path}.channel.payload: content '{subscribed.content}' is not empty, id-only or full-resource",
                f"{path}.channel.payload",
            )
        )
    return issues


def _criteria_issues(subscribed: SubscriptionView, path: str) -> list[Issue]:
    """The filters we support, a heartbeat not too frequent, and the PAS topic's payload."""
    issues: list[Issue] = []
    for name, _ in subscribed.filters:
        if name not in ("org-identifier", "patient"):
            issues.append(
                Issue(
                    "not-supported",
                    f"{path}.criteria: filter '{name}' is not supported (org-identifier, patient)",
                    f"{path}.criteria",
                )
            )
    if (
        subscribed.heartbeat_seconds is not None
        and subscribed.heartbeat_seconds < MIN_HEARTBEAT_SECONDS
    ):
        issues.append(
            Issue(
                "value",
                f"{path}.channel.extension: the heartbeat period must be at least "
                f"{MIN_HEARTBEAT_SECONDS} seconds",
                f"{path}.channel.extension",
            )
        )
    if subscribed.topic == PAS_TOPIC and subscribed.content != "full-resource":
        issues.append(
            Issue(
                "business-rule",
                f"{path}.channel.payload: the PAS topic sends full-resource payloads only (PAS spec-62)",
                f"{path}.channel.payload",
            )
        )
    return issues


def matches(
    subscribed: SubscriptionView, *, patient: str | None, org_identifiers: set[str]
) -> bool:
    """Filters are ANDed; each may list values separated by commas."""
    for name, value in subscribed.filters:
        wanted = {v.strip() for v in value.split(",") if v.strip()}
        if name == "patient" and (patient or "") not in wanted:
            return False
        if name == "org-identifier" and not (wanted & org_identifiers):
            return False
    return True


def notification(
    *,
    subscription_url: str,
    subscribed: SubscriptionView,
    kind: str,
    events_since_start: int,
    event_number: int | None = None,
    occurred: datetime | None = None,
    focus_url: str | None = None,
    focus: Mapping[str, Any] | None = None,
    payload_url: str | None = None,
    now: datetime,
) -> dict[str, Any]:
    """A `history` Bundle whose first entry is the subscription-status Parameters (backport R4).

    `focus_url` is the focus resource's own URL, readable by GET; `focus` is what a full-resource
    payload carries: that resource, or (PAS) a response Bundle about it, sent under `payload_url`,
    which the event's focus then names."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription_url}},
        {"name": "topic", "valueCanonical": subscribed.topic},
        {"name": "status", "valueCode": "active" if kind != "handshake" else "requested"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    if event_number is not None:
        event = _event_parts(subscribed, event_number, occurred, focus_url, payload_url)
        parameters.append({"name": "notification-event", "part": event})
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": _status_url(subscription_url, event_number),
            "resource": {
                "resourceType": "Parameters",
                "meta": {"profile": [STATUS_PROFILE]},
                "parameter": parameters,
            },
            "request": {"method": "GET", "url": f"{subscription_url}/$status"},
            "response": {"status": "200"},
        }
    ]
    if focus is not None and focus_url and subscribed.content == "full-resource":
        entries.append(_focus_entry(focus, focus_url, payload_url))
    return {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": format_instant(now),
        "entry": entries,
    }


def _event_parts(
    subscribed: SubscriptionView,
    event_number: int,
    occurred: datetime | None,
    focus_url: str | None,
    payload_url: str | None,
) -> list[dict[str, Any]]:
    """The parts of one notification-event: its number, when, and (unless empty) its focus."""
    event: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event_number)}]
    if occurred is not None:
        event.append({"name": "timestamp", "valueInstant": format_instant(occurred)})
    if focus_url and subscribed.content != "empty":
        # PAS (fhir.md §1.9, Inferno): the focus resolves to the PAS response Bundle it sends
        carried = payload_url is not None and subscribed.content == "full-resource"
        pointed = payload_url if carried else focus_url
        event.append({"name": "focus", "valueReference": {"reference": pointed}})
    return event


def _focus_entry(
    focus: Mapping[str, Any], focus_url: str, payload_url: str | None
) -> dict[str, Any]:
    """The full-resource entry: the focus itself, or (PAS) the response Bundle sent about it."""
    if payload_url is None:
        return {
            "fullUrl": focus_url,
            "resource": dict(focus),
            "request": {"method": "PUT", "url": focus_url},
            "response": {"status": "200"},
        }
    return {
        "fullUrl": payload_url,
        "resource": dict(focus),
        "request": {"method": "POST", "url": str(focus.get("resourceType"))},
        "response": {"status": "201"},
    }


def pas_response_bundle(
    subscription_url: str,
    claim_response_url: str,
    claim_response: Mapping[str, Any],
    referenced: Sequence[Mapping[str, Any]] = (),
    *,
    event: int,
    now: datetime,
) -> tuple[str, dict[str, Any]]:
    """A PAS response Bundle (collection, ClaimResponse first, then the `referenced` entries) and
    the fullUrl it is sent under: the same urn:uuid each time this event is sent to this
    Subscription."""
    url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{subscription_url}#event-{event}')}"
    bundle = {
        "resourceType": "Bundle",
        "identifier": {
            "system": "urn:trnorg:fhir-adapter",
            "value": f"{claim_response.get('id')}-{event}",
        },
        "type": "collection",
        "timestamp": format_instant(now),
        "entry": [
            {"fullUrl": claim_response_url, "resource": dict(claim_response)},
            *(dict(entry) for entry in referenced),
        ],
    }
    return url, bundle


def _status_url(subscription_url: str, event_number: int | None) -> str:
    """R4 wants a real UUID after urn:uuid:. An event's status keeps its one across resends; a
    handshake, heartbeat or query gets a new one each time."""
    if event_number is None:
        return f"urn:uuid:{uuid.uuid4()}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{subscription_url}#status-{event_number}')}"
