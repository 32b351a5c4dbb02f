"""Topic-based Subscriptions (R4 backport, rest-hook only): handshake on creation, one numbered
event-notification per decision, sent through the outbox, and `$status` / `$events` for recovery."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from fhir_adapter.access.guard import AccessGuard
from fhir_adapter.access.owners import owner_of
from fhir_adapter.access.scopes import Access
from fhir_adapter.errors import NotFoundError
from fhir_adapter.fhir.elements import local_key
from fhir_adapter.ports.delivery import Notifier
from fhir_adapter.ports.store import OutboxItem, ResourceStore, StoredResource, StoreTransaction
from fhir_adapter.services.referenced import ReferencedResources
from fhir_adapter.services.resources import Clock, ResourceService, with_meta
from fhir_adapter.workflow.subscriptions import (
    DECISION_TOPIC,
    PAS_TOPIC,
    matches,
    notification,
    pas_response_bundle,
    view,
)

log = logging.getLogger(__name__)

SUBSCRIPTIONS_PAGE = 500  # Subscriptions read a statement when looking for the active ones


class SubscriptionService:
    def __init__(
        self,
        store: ResourceStore,
        resources: ResourceService,
        notifier: Notifier,
        *,
        clock: Clock,
        referenced: ReferencedResources | None = None,
    ) -> None:
        self.store = store
        self.resources = resources
        self.notifier = notifier
        self.clock = clock
        self.referenced = referenced
        # The built-in issuer's registry: a removed client's Subscriptions carry nothing more.
        self.client_registered: Callable[[str], Awaitable[bool]] | None = None

    def url_of(self, subscription_id: str) -> str:
        return f"{self.resources.base_url}/Subscription/{subscription_id}"

    async def handshake(self, subscription_id: str) -> str:
        """Backport channels.md: a handshake before anything else; success -> active, else error."""
        subscription = await self.resources.read("Subscription", subscription_id)
        subscribed = view(subscription.content)
        bundle = notification(
            subscription_url=self.url_of(subscription_id),
            subscribed=subscribed,
            kind="handshake",
            events_since_start=0,
            now=self.clock(),
        )
        attempt = await self.notifier.post_notification(
            subscribed.endpoint, bundle, dict(subscribed.headers)
        )
        status = "active" if attempt.delivered else "error"
        async with self.store.transaction() as tx:
            current = await tx.resources.read_for_update("Subscription", subscription_id)
            if current is None or current.content.get("status") != "requested":
                return str(current.content.get("status")) if current else "gone"
            updated = {**current.content, "status": status}
            if attempt.delivered:
                updated.pop("error", None)
            else:
                updated["error"] = f"handshake failed; {attempt.error or 'delivery failed'}"
            now = self.clock()
            await tx.resources.replace(
                current, with_meta(updated, current.id, current.version_id + 1, now), now=now
            )
        log.info("Subscription/%s handshake: %s", subscription_id, status)
        return status

    async def notify(
        self,
        tx: StoreTransaction,
        focus: StoredResource,
        *,
        patient: str | None,
        org_identifiers: Callable[[], Awaitable[set[str]]],
        now: datetime,
    ) -> int:
        """In the decision's own transaction: an event and an outbox item per matching Subscription.

        `org_identifiers` is read only when a Subscription to a decision topic is active."""
        sent = 0
        identifiers: set[str] | None = None
        for found in await self._active(tx):
            subscribed = view(found.content)
            if subscribed.topic not in (DECISION_TOPIC, PAS_TOPIC):
                continue
            if identifiers is None:
                identifiers = await org_identifiers()
            if not matches(subscribed, patient=patient, org_identifiers=identifiers):
                continue
            owner = self._owner_guard(found.content)
            if owner is not None and owner.patient_bound and not owner.visible(focus.content):
                continue  # a member's app hears of the member's own decisions alone
            locked = await tx.resources.read_for_update(
                "Subscription", found.id
            )  # numbers stay consecutive
            if locked is None:
                continue
            number = await tx.events.add(found.id, focus.key, now=now)
            await _queue(tx, found.id, focus.id, number, now)
            sent += 1
        return sent

    async def _active(self, tx: StoreTransaction) -> list[StoredResource]:
        """The active Subscriptions, read by type and kept by status here: every decision and
        every worker pass asks. `status=active` is indexed for every active resource of every
        type (each request's ServiceRequest and Coverage among them), so a search led by that
        token, which PostgreSQL picks when its statistics lag a growing table, reads more rows
        with each request stored; the type's own index reads the few Subscriptions alone."""
        query = replace(
            self.resources.parse_query("Subscription", [("_count", str(SUBSCRIPTIONS_PAGE))]),
            with_total=False,
        )
        active: list[StoredResource] = []
        while True:
            page = await tx.resources.search(query)
            active += [r for r in page.matches if r.content.get("status") == "active"]
            if page.next_cursor is None:
                return active
            query = replace(query, cursor=page.next_cursor)

    async def _still_registered(self, owner: Access) -> bool:
        """Whether the owner, if its token came from the built-in issuer, is registered still."""
        if not owner.registered or self.client_registered is None:
            return True
        return await self.client_registered(owner.client_id)

    def _owner_guard(self, subscription: dict[str, Any]) -> AccessGuard | None:
        """The owner's grants as recorded when the Subscription was written; None when no client
        owns it (then notifications carry no resource)."""
        owner = owner_of(subscription)
        return AccessGuard(owner, base_url=self.resources.base_url) if owner else None

    async def queue_heartbeats(self, *, limit: int = 100) -> int:
        """Backport heartbeats: a Subscription with a heartbeat period that has heard nothing for that
        long gets a heartbeat, queued through the outbox like any notification."""
        now = self.clock()
        queued = 0
        async with self.store.transaction() as tx:
            for found in (await self._active(tx))[:limit]:
                period = view(found.content).heartbeat_seconds
                if period is None:
                    continue
                locked = await tx.resources.read_for_update(
                    "Subscription", found.id
                )  # one heartbeat per period
                if locked is None:
                    continue
                last = await tx.events.last_sent(found.id) or locked.last_updated
                if (now - last).total_seconds() < period:
                    continue
                await _queue(tx, found.id, found.id, None, now)  # no event number: a heartbeat
                queued += 1
        return queued

    async def prepare(
        self, item: OutboxItem
    ) -> tuple[dict[str, Any] | None, str | None, dict[str, str], str | None]:
        """The notification Bundle for one outbox item, where to send it, and with which headers."""
        assert item.subscription_id is not None
        if item.event_number is None:
            return await self._heartbeat(item.subscription_id)
        async with self.store.transaction(write=False) as tx:
            subscription = await tx.resources.read("Subscription", item.subscription_id)
            events = await tx.events.read(
                item.subscription_id, since=item.event_number, until=item.event_number
            )
            focus = None
            if events:
                key = local_key(events[0].focus, self.resources.base_url)
                focus = await tx.resources.read(*key) if key else None
        if subscription is None or subscription.content.get("status") != "active" or not events:
            return None, None, {}, "subscription not active"
        subscribed = view(subscription.content)
        subscription_url = self.url_of(subscription.id)
        focus_url = f"{self.resources.base_url}/{events[0].focus}"  # readable by GET
        focus_content = focus.content if focus else None
        # Issue #16: only what the owner may read now travels; otherwise the event alone.
        owner = self._owner_guard(subscription.content)
        if owner is not None and not await self._still_registered(owner.access):
            owner = None
        if focus_content is None or owner is None or not owner.visible(focus_content):
            subscribed, focus_content = replace(subscribed, content="empty"), None
        payload_url = None
        if subscribed.topic == PAS_TOPIC and focus_content is not None and owner is not None:
            # PAS spec-60: the notification carries a full PAS response Bundle, ClaimResponse first.
            # Everything the ClaimResponse references travels with it (spec-30 applies to it too).
            others = (
                await self.referenced.collect(focus_content, focus_url, guard=owner)
                if self.referenced is not None
                else []
            )
            payload_url, focus_content = pas_response_bundle(
                subscription_url,
                focus_url,
                focus_content,
                others,
                event=item.event_number,
                now=self.clock(),
            )
        bundle = notification(
            subscription_url=subscription_url,
            subscribed=subscribed,
            kind="event-notification",
            events_since_start=item.event_number,
            event_number=item.event_number,
            occurred=events[0].occurred_at,
            focus_url=focus_url,
            focus=focus_content,
            payload_url=payload_url,
            now=self.clock(),
        )
        return bundle, subscribed.endpoint, dict(subscribed.headers), None

    async def _heartbeat(
        self, subscription_id: str
    ) -> tuple[dict[str, Any] | None, str | None, dict[str, str], str | None]:
        subscription, count = await self._with_count(subscription_id)
        if subscription.content.get("status") != "active":
            return None, None, {}, "subscription not active"
        subscribed = view(subscription.content)
        bundle = notification(
            subscription_url=self.url_of(subscription_id),
            subscribed=subscribed,
            kind="heartbeat",
            events_since_start=count,
            now=self.clock(),
        )
        return bundle, subscribed.endpoint, dict(subscribed.headers), None

    async def status(self, subscription_id: str) -> dict[str, Any]:
        """`$status`: a searchset Bundle holding the subscription-status Parameters."""
        subscription, count = await self._with_count(subscription_id)
        parameters = notification(
            subscription_url=self.url_of(subscription_id),
            subscribed=view(subscription.content),
            kind="query-status",
            events_since_start=count,
            now=self.clock(),
        )["entry"][0]["resource"]
        status = next(p for p in parameters["parameter"] if p["name"] == "status")
        status["valueCode"] = subscription.content.get("status", "error")
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"resource": parameters, "search": {"mode": "match"}}],
        }

    async def events(self, subscription_id: str, since: int, until: int | None) -> dict[str, Any]:
        """`$events`: the numbered events again, as a query-event history Bundle (with focus ids)."""
        subscription, count = await self._with_count(subscription_id)
        subscribed = view(subscription.content)
        async with self.store.transaction(write=False) as tx:
            found = await tx.events.read(subscription_id, since=since, until=until)
        bundle = notification(
            subscription_url=self.url_of(subscription_id),
            subscribed=subscribed,
            kind="query-event",
            events_since_start=count,
            now=self.clock(),
        )
        status = bundle["entry"][0]["resource"]
        for event in found:
            part: list[dict[str, Any]] = [
                {"name": "event-number", "valueString": str(event.event_number)}
            ]
            if subscribed.content != "empty":  # as in the notifications themselves (issue #16)
                reference = f"{self.resources.base_url}/{event.focus}"
                part.append({"name": "focus", "valueReference": {"reference": reference}})
            status["parameter"].append({"name": "notification-event", "part": part})
        return bundle

    async def _with_count(self, subscription_id: str) -> tuple[StoredResource, int]:
        async with self.store.transaction(write=False) as tx:
            subscription = await tx.resources.read("Subscription", subscription_id)
            if subscription is None:
                raise NotFoundError(f"Subscription/{subscription_id} is not known")
            return subscription, await tx.events.count(subscription_id)


async def _queue(
    tx: StoreTransaction, subscription_id: str, subject_id: str, event: int | None, now: datetime
) -> None:
    """Owe the Subscription a notification (an event, or a heartbeat when `event` is None)."""
    await tx.outbox.add(
        OutboxItem(
            id=str(uuid.uuid4()),
            communication_id=subject_id,
            destination="subscription",
            state="pending",
            attempts=0,
            created_at=now,
            next_attempt_at=now,
            subscription_id=subscription_id,
            event_number=event,
        )
    )
