"""The audit trail writer: AuditEvents are queued by the API and written in batches.

Writing one transaction per request would double the cost of every read; instead events wait at
most `flush_seconds` and go to the store together (one transaction per batch), and shutdown
flushes what is left. The price: a process killed outright loses at most that window of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from fhir_adapter.access.audit import (
    AuditRecord,
    StaffAuditRecord,
    audit_event,
    staff_audit_event,
)
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.services.resources import Clock, utc_now, with_meta

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(
        self, store: ResourceStore, *, flush_seconds: float = 0.5, clock: Clock = utc_now
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._queue: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    def record(self, record: AuditRecord) -> None:
        """Queue one event for the next flush."""
        self._queue.append(audit_event(record))

    def record_staff(self, record: StaffAuditRecord) -> None:
        """Queue one event of the review workspace (a staff member as the agent)."""
        self._queue.append(staff_audit_event(record))

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every `flush_seconds` until `stop`, then once more (the app's lifespan runs it)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.flush_seconds)
            try:
                await self.flush()
            except Exception:  # logged by flush; the events wait for the next round
                await asyncio.sleep(self.flush_seconds)

    async def flush(self) -> int:
        """Write every queued event now; returns how many were written."""
        async with self._lock:
            batch, self._queue = self._queue, []
            if not batch:
                return 0
            try:
                async with self.store.transaction() as tx:
                    for event in batch:
                        now = self.clock()
                        await tx.resources.insert(
                            with_meta(event, str(uuid.uuid4()), 1, now), now=now
                        )
            except Exception as exc:
                # Put them back for the next flush rather than lose them.
                self._queue[:0] = batch
                log.error("audit flush failed (%s); %d events kept", type(exc).__name__, len(batch))
                raise
            return len(batch)

    async def close(self) -> None:
        await self.flush()
