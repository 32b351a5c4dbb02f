"""Reliable delivery of Communications from the outbox (contract §4.6): leased through the
database, retried with exponential backoff and jitter, failed after a configurable number of
attempts, visible in Communication.status. Receivers get conditional creates, so a delivery
repeated after a crash is stored once."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_adapter import telemetry
from fhir_adapter.errors import DirectoryUnavailableError
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.elements import ResourceKey, codes_in, local_key, npi_of, reference_of
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.ports.delivery import Deliverer, DeliveryAttempt
from fhir_adapter.ports.directory import Directory
from fhir_adapter.ports.store import (
    OutboxItem,
    ResourceStore,
    StoredResource,
    StoreTransaction,
)
from fhir_adapter.services.rendering import NoticeRendering
from fhir_adapter.services.resources import Clock, ResourceService, with_meta
from fhir_adapter.services.subscriptions import SubscriptionService
from fhir_adapter.workflow.letters import mailing_proof
from fhir_adapter.workflow.provenance import delivery_provenance
from fhir_adapter.workflow.reports import delivery_bundle, notice_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_attempts: int = 8
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 3600.0
    lease_seconds: float = 120.0
    member_notice_url: str | None = None
    plan_organization: str = "Organization/demo-plan"  # the agent of delivery Provenance


class DeliveryService:
    def __init__(
        self,
        store: ResourceStore,
        resources: ResourceService,
        directory: Directory,
        deliverer: Deliverer,
        *,
        config: DeliveryConfig,
        clock: Clock,
        jitter: Callable[[], float] = random.random,
        subscriptions: SubscriptionService | None = None,
        render_executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.resources = resources
        self.directory = directory
        self.deliverer = deliverer
        self.config = config
        self.clock = clock
        self.jitter = jitter
        self.subscriptions = subscriptions
        self.rendering = NoticeRendering(
            store,
            clock=clock,
            lease_seconds=config.lease_seconds,
            max_attempts=config.max_attempts,
            backoff=self._backoff,
            executor=render_executor,
        )

    async def run_due(self, *, limit: int = 20) -> int:
        """Try every due delivery once; returns how many were tried (render jobs: `rendering`)."""
        now = self.clock()
        async with self.store.transaction() as tx:
            items = await tx.outbox.claim(
                now=now, lease_until=now + timedelta(seconds=self.config.lease_seconds), limit=limit
            )
        for item in items:
            try:
                await self._deliver(item)
            except (
                Exception
            ) as exc:  # a bug or a store hiccup: the lease runs out and it is retried
                log.error("delivery %s crashed (%s)", item.id, type(exc).__name__)
        return len(items)

    async def _deliver(self, item: OutboxItem) -> None:
        if item.destination == "subscription":
            await self._notify_subscriber(item)
            return
        communication = await self.resources.read("Communication", item.communication_id)
        bundle, target, problem = await self._prepare(item, communication)
        attempt = (
            await self.deliverer.post_transaction(target, bundle)
            if bundle is not None and target is not None
            else DeliveryAttempt(False, problem)
        )
        await self._record(item, communication, attempt)

    async def _prepare(
        self, item: OutboxItem, communication: StoredResource
    ) -> tuple[dict[str, Any] | None, str | None, str | None]:
        content = communication.content
        base = self.resources.base_url
        report_key, proposals = _payload_keys(content, base)
        keys = [
            report_key,
            parse_reference(content["subject"]["reference"], base_url=base).local_key,
        ]
        async with self.store.transaction(write=False) as tx:
            found = await tx.resources.read_many(
                ResourceKey.parse(k) for k in [*keys, *proposals] if k
            )
            recipient, practitioner = await self._recipient(tx, content)
        report, patient = found.get(report_key or ""), found.get(keys[1] or "")
        if patient is None:
            return None, None, "patient missing"
        if (
            report is None
        ):  # a written notice: the letter travels as the Communication's attachments
            bundle = notice_bundle(content, patient.content)
        else:
            bundle = delivery_bundle(
                content,
                report.content,
                patient.content,
                [found[k].content for k in proposals if k in found],
                report_id=report.id,
            )
        if item.destination == "member-notice-url":
            return bundle, self.config.member_notice_url, "no member notice URL"
        target = await self._pcp_endpoint(recipient, practitioner)
        return (
            (bundle, target, None) if target else (None, None, "no FHIR endpoint in the directory")
        )

    async def _recipient(
        self, tx: StoreTransaction, content: dict[str, Any]
    ) -> tuple[StoredResource | None, StoredResource | None]:
        """The Communication's recipient and the Practitioner behind it (itself, or the one a
        PractitionerRole names)."""
        base = self.resources.base_url
        recipient_key = local_key(content["recipient"][0]["reference"], base)
        recipient = await tx.resources.read(*recipient_key) if recipient_key else None
        practitioner = (
            recipient if recipient and recipient.resource_type == "Practitioner" else None
        )
        if recipient is not None and recipient.resource_type == "PractitionerRole":
            practitioner_key = local_key(reference_of(recipient.content.get("practitioner")), base)
            practitioner = await tx.resources.read(*practitioner_key) if practitioner_key else None
        return recipient, practitioner

    async def _pcp_endpoint(
        self, role: StoredResource | None, practitioner: StoredResource | None
    ) -> str | None:
        """Contract §4.6: the endpoint the directory lists for the PCP (hl7-fhir-rest)."""
        if role is None and practitioner is None:
            return None
        npi = npi_of(practitioner.content if practitioner else None)
        if not npi:
            return None
        specialties = set(codes_in((role.content if role else {}).get("specialty"), None))
        try:
            roles = await self.directory.roles_by_npi(npi, today=self.clock())
        except DirectoryUnavailableError:
            return None
        ranked = sorted(roles, key=lambda r: (not (r.specialties & specialties), not r.in_network))
        return next((r.fhir_endpoint for r in ranked if r.fhir_endpoint), None)

    async def _record(
        self, item: OutboxItem, communication: StoredResource, attempt: DeliveryAttempt
    ) -> None:
        now = self.clock()
        async with self.store.transaction() as tx:
            current = await tx.resources.read_for_update("Communication", communication.id)
            if current is None:
                return
            if current.content.get("status") == "completed":
                # Another worker delivered it while this one's lease ran out (docs/durability.md):
                # the receiver kept one copy; neither undo that nor record it twice.
                await tx.outbox.set(item.id, state="delivered", delivered_at=now)
                return
            if attempt.delivered:
                await tx.outbox.set(item.id, state="delivered", delivered_at=now)
                telemetry.delivery_attempted(item.destination, "delivered")
                updated = _completed(current.content, item, attempt, now)
                log.info("delivery %s of Communication/%s done", item.id, current.id)
            elif item.attempts >= self.config.max_attempts:
                await tx.outbox.set(item.id, state="failed", error=attempt.error)
                telemetry.delivery_attempted(item.destination, "failed")
                updated = _not_done(current.content, item, attempt)
                log.warning(
                    "delivery %s failed for good after %d attempts (%s)",
                    item.id,
                    item.attempts,
                    attempt.error,
                )
            else:
                delay = self._backoff(item)
                await tx.outbox.set(
                    item.id, state="pending", next_attempt_at=now + delay, error=attempt.error
                )
                telemetry.delivery_attempted(item.destination, "retry")
                log.info(
                    "delivery %s attempt %d failed (%s); retry in %.0fs",
                    item.id,
                    item.attempts,
                    attempt.error,
                    delay.total_seconds(),
                )
                return
            await self._write_outcome(tx, current, updated, attempt, now)

    async def _write_outcome(
        self,
        tx: StoreTransaction,
        current: StoredResource,
        updated: dict[str, Any],
        attempt: DeliveryAttempt,
        now: datetime,
    ) -> None:
        """The Communication's final status, and the Provenance of the delivery (or its failure)."""
        updated.pop("meta", None)
        stored = await tx.resources.replace(
            current, with_meta(updated, current.id, current.version_id + 1, now), now=now
        )
        provenance = delivery_provenance(
            communication=f"{stored.key}/_history/{stored.version_id}",
            plan=self.config.plan_organization,
            recorded=now,
            delivered=attempt.delivered,
        )
        await tx.resources.insert(with_meta(provenance, str(uuid.uuid4()), 1, now), now=now)

    async def _notify_subscriber(self, item: OutboxItem) -> None:
        if self.subscriptions is None:
            return
        bundle, url, headers, problem = await self.subscriptions.prepare(item)
        if bundle is None or url is None:
            attempt = DeliveryAttempt(False, problem)
        else:
            sent = await self.subscriptions.notifier.post_notification(url, bundle, headers)
            attempt = DeliveryAttempt(sent.delivered, sent.error)
        now = self.clock()
        async with self.store.transaction() as tx:
            if attempt.delivered:
                await tx.outbox.set(item.id, state="delivered", delivered_at=now)
                telemetry.delivery_attempted(item.destination, "delivered")
            elif item.attempts >= self.config.max_attempts or problem == "subscription not active":
                await tx.outbox.set(item.id, state="failed", error=attempt.error)
                telemetry.delivery_attempted(item.destination, "failed")
            else:
                telemetry.delivery_attempted(item.destination, "retry")
                await tx.outbox.set(
                    item.id,
                    state="pending",
                    next_attempt_at=now + self._backoff(item),
                    error=attempt.error,
                )

    def _backoff(self, item: OutboxItem) -> timedelta:
        seconds = min(
            self.config.backoff_base_seconds * 2 ** (item.attempts - 1),
            self.config.backoff_max_seconds,
        ) * (0.5 + self.jitter())
        return timedelta(seconds=seconds)

    async def retry_failed(self, ids: list[str] | None = None) -> int:
        """Put failed deliveries back in the queue (`fhir-adapter outbox retry`)."""
        now = self.clock()
        async with self.store.transaction() as tx:
            count = await tx.outbox.retry(now=now, ids=ids)
        return count


def _payload_keys(content: dict[str, Any], base: str) -> tuple[str | None, list[str | None]]:
    """The Communication's consultation report (`DiagnosticReport/id`), if any, and the
    ServiceRequests it proposes, from its payload's references."""
    references = [
        p["contentReference"]["reference"]
        for p in content.get("payload") or []
        if isinstance(p.get("contentReference"), dict)
    ]
    report_key = next(
        (
            key
            for key in (parse_reference(r, base_url=base).local_key for r in references)
            if key and key.startswith("DiagnosticReport/")
        ),
        None,
    )
    proposals = [
        parse_reference(r, base_url=base).local_key
        for r in references
        if r.startswith("ServiceRequest/")
    ]
    return report_key, proposals


def _completed(
    content: dict[str, Any], item: OutboxItem, attempt: DeliveryAttempt, now: datetime
) -> dict[str, Any]:
    """The Communication as delivered: `completed`, sent now; a member's copy with its mailing
    proof."""
    updated = {**content, "status": "completed", "sent": format_instant(now)}
    updated.pop("statusReason", None)
    if item.destination == "member-notice-url":
        updated["extension"] = mailing_proof(
            updated.get("extension") or [], accepted=now, mailed_on=attempt.mailed_on
        )
    return updated


def _not_done(
    content: dict[str, Any], item: OutboxItem, attempt: DeliveryAttempt
) -> dict[str, Any]:
    """The Communication as a dead letter: `not-done`, with why (a category, never PHI)."""
    reason = f"delivery failed after {item.attempts} attempts ({attempt.error})"
    return {**content, "status": "not-done", "statusReason": {"text": reason}}
