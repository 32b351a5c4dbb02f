"""Queue depths, the oldest due item's age and dead letters, read from the store when
`/metrics` is scraped (issue #13).

A few aggregate statements on indexed columns (`state`, `next_attempt_at`), run at most once per
`cache_seconds` however often and from however many scrapers `/metrics` is read, and given a
short timeout: a slow database makes the figures stale (`fhir_adapter_queue_stats_age_seconds`
says how stale), never the scrape slow. The figures are the database's, so every process and
every instance reports the same: sum them in a query with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.store.tables import outbox, workflow_jobs

log = logging.getLogger(__name__)

# queue name -> (table, the states that are work still owed, the state that is a dead letter)
_QUEUES = (
    ("workflow_jobs", workflow_jobs, ("evaluate", "review"), None),
    ("outbox", outbox, ("pending", "failed"), "failed"),
)
# The state whose due items are being worked through: its oldest due item's age is the lag.
_RUNNABLE = {"workflow_jobs": "evaluate", "outbox": "pending"}


@dataclass
class Snapshot:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, state) -> rows
    oldest_due: dict[str, float] = field(default_factory=dict)  # queue -> seconds overdue
    dead: dict[str, int] = field(default_factory=dict)
    taken_at: float | None = None  # time.monotonic() of the last good read
    ok: bool = False


class QueueStats(Collector):
    """A prometheus-client collector over a cached snapshot; `refresh()` (async) reads the store."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], datetime],
        *,
        cache_seconds: float = 5.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.timeout = timeout_seconds
        self.snapshot = Snapshot()
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the store unless the last read (good or failed) is younger than the cache."""
        async with self._lock:
            now = time.monotonic()
            if self._tried_at is not None and now - self._tried_at < self.cache_seconds:
                return
            self._tried_at = now
            try:
                async with asyncio.timeout(self.timeout):
                    snapshot = await self._read()
            except Exception as exc:  # the figures go stale; the scrape still answers
                log.warning("queue metrics not read (%s)", type(exc).__name__)
                self.snapshot.ok = False
                return
            snapshot.taken_at, snapshot.ok = now, True
            self.snapshot = snapshot

    async def _read(self) -> Snapshot:
        snapshot = Snapshot()
        now = self.clock()
        async with self.engine.connect() as conn:
            for name, table, states, dead_state in _QUEUES:
                rows = await conn.execute(
                    select(table.c.state, func.count(), func.min(table.c.next_attempt_at))
                    .where(table.c.state.in_(states))
                    .group_by(table.c.state)
                )
                snapshot.oldest_due[name] = 0.0
                for state in states:
                    snapshot.depth[(name, state)] = 0
                if dead_state:
                    snapshot.dead[name] = 0
                for state, count, earliest in rows:
                    snapshot.depth[(name, state)] = int(count)
                    if state == dead_state:
                        snapshot.dead[name] = int(count)
                    if state == _RUNNABLE[name] and earliest is not None:
                        earliest = _aware(earliest, now)
                        snapshot.oldest_due[name] = max(0.0, (now - earliest).total_seconds())
        return snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        yield _gauge(
            "fhir_adapter_queue_depth",
            "Rows in a work queue by state",
            ["queue", "state"],
            {key: float(count) for key, count in snap.depth.items()},
        )
        yield _gauge(
            "fhir_adapter_queue_oldest_due_seconds",
            "How long the oldest item that is due has been waiting (0: nothing overdue)",
            ["queue"],
            {(queue,): seconds for queue, seconds in snap.oldest_due.items()},
        )
        yield _gauge(
            "fhir_adapter_dead_letters",
            "Deliveries given up after their last attempt (`fhir-adapter outbox retry`)",
            ["queue"],
            {(queue,): float(count) for queue, count in snap.dead.items()},
        )
        yield _gauge(
            "fhir_adapter_queue_stats_up",
            "1 if the last read of the queues succeeded",
            [],
            {(): 1.0 if snap.ok else 0.0},
        )
        if snap.taken_at is not None:
            yield _gauge(
                "fhir_adapter_queue_stats_age_seconds",
                "Age of the queue figures above",
                [],
                {(): time.monotonic() - snap.taken_at},
            )


def _gauge(
    name: str, documentation: str, labels: list[str], values: dict[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _aware(moment: datetime, now: datetime) -> datetime:
    """SQLite hands back naive UTC text through a bare aggregate (no column type applied)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=now.tzinfo)
