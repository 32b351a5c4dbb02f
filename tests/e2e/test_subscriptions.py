"""Payer systems subscribe to decisions (R4 Subscriptions backport, rest-hook)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.delivery.http import HttpDeliverer
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.workflow.subscriptions import (
    DECISION_TOPIC,
    FILTER_EXTENSION,
    PAS_TOPIC,
    PAYLOAD_EXTENSION,
)
from tests.conftest import BASE_URL, DIRECTORY_BASE, count_rows
from tests.factories import example_request, unresolved_references
from tests.fakes import FrozenClock
from tests.receiver import Receiver
from tests.tokens import bearer


@pytest.fixture
def subscriber() -> Receiver:
    return Receiver()


@pytest.fixture
async def hub(
    settings: Settings,
    engine: AsyncEngine,
    directory_app: FastAPI,
    subscriber: Receiver,
    clock: FrozenClock,
) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=directory_app), base_url="http://directory.test"
        ) as dir_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriber.app)) as out_http,
    ):
        container = await build_container(
            settings,
            store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
            directory=DirectoryClient(
                dir_http, DIRECTORY_BASE, network="Organization/medi-cal-network"
            ),
            deliverer=HttpDeliverer(out_http),
            clock=clock,
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container=container)),
            base_url=BASE_URL,
            headers=bearer(container),
        ) as api:
            yield container, api


def subscription(
    topic: str = DECISION_TOPIC,
    *,
    content: str = "full-resource",
    endpoint: str = "http://payer.test/hooks/um",
    filters: tuple[str, ...] = (),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "UM system follows second-opinion decisions",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_EXTENSION, "valueCode": content}]},
            "header": ["Authorization: Bearer subscriber-secret"],
        },
    }
    if filters:
        body["_criteria"] = {
            "extension": [{"url": FILTER_EXTENSION, "valueString": f} for f in filters]
        }
    return body


def status_parameters(bundle: dict[str, Any]) -> dict[str, Any]:
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    return {p["name"]: p for p in parameters["parameter"]}


async def test_handshake_then_one_numbered_notification_per_decision(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver
) -> None:
    container, api = hub
    created = await api.post("/Subscription", json=subscription())
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert (await api.get(f"/Subscription/{sub_id}")).json()["status"] == "active"
    [handshake] = subscriber.notifications
    assert handshake["type"] == "history"
    assert status_parameters(handshake)["type"]["valueCode"] == "handshake"
    for i, name in enumerate(("in-network-specialist-care", "denied", "out-of-network")):
        await api.post("", json=example_request(name, f"-sub{i}"))
    while await container.delivery.run_due(limit=100):
        pass
    events = [
        n
        for n in subscriber.notifications
        if status_parameters(n)["type"]["valueCode"] == "event-notification"
    ]
    assert len(events) == 3
    numbers = []
    for notification in events:
        params = status_parameters(notification)
        event = {p["name"]: p for p in params["notification-event"]["part"]}
        numbers.append(int(event["event-number"]["valueString"]))
        assert event["focus"]["valueReference"]["reference"].startswith(
            f"{BASE_URL}/ClaimResponse/"
        )
        assert (
            notification["entry"][1]["resource"]["resourceType"] == "ClaimResponse"
        )  # full-resource
    assert sorted(numbers) == [1, 2, 3]
    status = (await api.get(f"/Subscription/{sub_id}/$status")).json()
    assert status_parameters(status)["events-since-subscription-start"]["valueString"] == "3"
    assert status_parameters(status)["status"]["valueCode"] == "active"
    replay = (
        await api.get(f"/Subscription/{sub_id}/$events", params={"eventsSinceNumber": "2"})
    ).json()
    replayed = [
        p for p in replay["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
    ]
    assert [p["part"][0]["valueString"] for p in replayed] == ["2", "3"]


async def test_a_failed_handshake_leaves_the_subscription_in_error(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver
) -> None:
    _, api = hub
    subscriber.refusing = True
    created = (await api.post("/Subscription", json=subscription())).json()
    stored = (await api.get(f"/Subscription/{created['id']}")).json()
    assert stored["status"] == "error"
    assert "handshake failed" in stored["error"]


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (subscription(topic="http://example.org/SubscriptionTopic/nope"), "Subscription.criteria"),
        (subscription(endpoint="ftp://payer.test/hooks"), "Subscription.channel.endpoint"),
        (
            {**subscription(), "channel": {**subscription()["channel"], "type": "websocket"}},
            "Subscription.channel.type",
        ),
        (subscription(topic=PAS_TOPIC, content="id-only"), "Subscription.channel.payload"),
        (subscription(filters=("colour=blue",)), "Subscription.criteria"),
        ({**subscription(), "status": "active"}, "Subscription.status"),
    ],
    ids=[
        "unknown-topic",
        "bad-endpoint",
        "not-rest-hook",
        "pas-needs-full-resource",
        "unknown-filter",
        "not-requested",
    ],
)
async def test_unusable_subscriptions_are_422(
    hub: tuple[Container, httpx.AsyncClient],
    engine: AsyncEngine,
    body: dict[str, Any],
    expression: str,
) -> None:
    _, api = hub
    before = await count_rows(engine)
    response = await api.post("/Subscription", json=body)
    assert response.status_code == 422, response.text
    assert expression in [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert await count_rows(engine) == before


async def test_filters_choose_which_decisions_are_sent(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver
) -> None:
    container, api = hub
    await api.post(
        "/Subscription",
        json=subscription(topic=PAS_TOPIC, filters=("org-identifier=someone-else",)),
    )
    await api.post("", json=example_request("in-network-specialist-care", "-filtered"))
    while await container.delivery.run_due(limit=100):
        pass
    kinds = [status_parameters(n)["type"]["valueCode"] for n in subscriber.notifications]
    assert kinds == ["handshake"]


async def test_status_of_an_unknown_subscription_is_404(
    hub: tuple[Container, httpx.AsyncClient],
) -> None:
    _, api = hub
    assert (await api.get("/Subscription/nope/$status")).status_code == 404


async def test_quiet_subscriptions_get_heartbeats(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver, clock: FrozenClock
) -> None:
    container, api = hub
    body = subscription()
    body["channel"]["extension"] = [
        {
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
            "valueUnsignedInt": 60,
        }
    ]
    assert (await api.post("/Subscription", json=body)).status_code == 201
    clock.advance(seconds=30)
    assert await container.subscriptions.queue_heartbeats() == 0
    clock.advance(seconds=31)
    assert await container.subscriptions.queue_heartbeats() == 1
    assert await container.subscriptions.queue_heartbeats() == 0  # one per period
    assert await container.delivery.run_due() == 1
    kinds = [status_parameters(n)["type"]["valueCode"] for n in subscriber.notifications]
    assert kinds == ["handshake", "heartbeat"]
    clock.advance(seconds=59)
    assert await container.subscriptions.queue_heartbeats() == 0
    clock.advance(seconds=2)
    assert await container.subscriptions.queue_heartbeats() == 1


async def test_pas_subscribers_get_a_pas_response_bundle_named_by_the_focus(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver
) -> None:
    """fhir.md §1.9 (the IG's example; Inferno checks it): notification-event.focus resolves,
    inside the notification, to the PAS response Bundle; that Bundle's ClaimResponse is under its
    own URL, which a GET reads."""
    container, api = hub
    assert (await api.post("/Subscription", json=subscription(topic=PAS_TOPIC))).status_code == 201
    await api.post("", json=example_request("out-of-network", "-pas-focus"))
    while await container.delivery.run_due(limit=100):
        pass
    [event] = [
        n
        for n in subscriber.notifications
        if status_parameters(n)["type"]["valueCode"] == "event-notification"
    ]
    parts = {p["name"]: p for p in status_parameters(event)["notification-event"]["part"]}
    focus = parts["focus"]["valueReference"]["reference"]
    assert UUID_URN.match(focus), focus
    assert event["entry"][1]["fullUrl"] == focus
    response_bundle = event["entry"][1]["resource"]
    assert response_bundle["resourceType"] == "Bundle" and response_bundle["type"] == "collection"
    first = response_bundle["entry"][0]
    assert first["resource"]["resourceType"] == "ClaimResponse"
    assert first["fullUrl"].startswith(f"{BASE_URL}/ClaimResponse/")
    read = await api.get(first["fullUrl"].removeprefix(BASE_URL))
    assert read.status_code == 200, read.text
    assert read.json()["id"] == first["resource"]["id"]
    # PAS spec-60: a full response Bundle, in which all the ClaimResponse names resolves
    assert unresolved_references(response_bundle) == []
    kinds = {e["resource"]["resourceType"] for e in response_bundle["entry"][1:]}
    assert {"Patient", "Organization", "Claim"} <= kinds, kinds


UUID_URN = re.compile(
    r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


def full_urls(bundle: dict[str, Any]) -> Iterator[str]:
    """Every entry fullUrl of `bundle` and of the Bundles inside it."""
    for entry in bundle.get("entry") or []:
        yield entry["fullUrl"]
        if entry["resource"]["resourceType"] == "Bundle":
            yield from full_urls(entry["resource"])


async def test_notification_full_urls_are_absolute_urls_or_real_uuids(
    hub: tuple[Container, httpx.AsyncClient], subscriber: Receiver, clock: FrozenClock
) -> None:
    container, api = hub
    heartbeat = {
        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period",
        "valueUnsignedInt": 60,
    }
    for topic in (DECISION_TOPIC, PAS_TOPIC):
        body = subscription(topic=topic)
        body["channel"]["extension"] = [heartbeat]
        assert (await api.post("/Subscription", json=body)).status_code == 201
    await api.post("", json=example_request("out-of-network", "-urls"))
    clock.advance(seconds=61)
    assert await container.subscriptions.queue_heartbeats() == 2
    while await container.delivery.run_due(limit=100):
        pass
    kinds = sorted(status_parameters(n)["type"]["valueCode"] for n in subscriber.notifications)
    assert kinds == ["event-notification"] * 2 + ["handshake"] * 2 + ["heartbeat"] * 2
    seen = [url for n in subscriber.notifications for url in full_urls(n)]
    for url in seen:
        assert url.startswith(("http://", "https://")) or UUID_URN.match(url), url
    status_urls = [n["entry"][0]["fullUrl"] for n in subscriber.notifications]
    assert len(set(status_urls)) == len(status_urls)  # no two notifications share one


async def test_every_active_subscription_hears_of_a_decision_however_many_there_are(
    hub: tuple[Container, httpx.AsyncClient],
    subscriber: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The active Subscriptions are read a page at a time by type and kept by status: a
    Subscription in error among them hears nothing, every active one on every page hears."""
    import fhir_adapter.services.subscriptions as subscriptions

    monkeypatch.setattr(subscriptions, "SUBSCRIPTIONS_PAGE", 1)
    container, api = hub
    first = (await api.post("/Subscription", json=subscription())).json()["id"]
    subscriber.refusing = True
    failed = (await api.post("/Subscription", json=subscription())).json()["id"]
    subscriber.refusing = False
    third = (await api.post("/Subscription", json=subscription())).json()["id"]
    assert (await api.get(f"/Subscription/{failed}")).json()["status"] == "error"

    await api.post("", json=example_request("in-network-specialist-care", "-paged"))
    while await container.delivery.run_due(limit=100):
        pass

    heard = []
    for notification in subscriber.notifications:
        params = status_parameters(notification)
        if params["type"]["valueCode"] == "event-notification":
            heard.append(params["subscription"]["valueReference"]["reference"])
    assert sorted(heard) == sorted(f"{BASE_URL}/Subscription/{i}" for i in (first, third))
