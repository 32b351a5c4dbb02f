"""The background loop every `serve` process runs: deadline sweep, directory retries, deliveries.

All of it is claimed through the database, so any number of processes may run it at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fhir_adapter.services.delivery import DeliveryService
from fhir_adapter.services.second_opinion.jobs import WorkflowJobs

log = logging.getLogger(__name__)


async def run_background(
    jobs: WorkflowJobs,
    delivery: DeliveryService,
    stop: asyncio.Event,
    *,
    interval_seconds: float = 2.0,
) -> None:
    """Until `stop` is set: one pass of each kind of work, then a pause (each pass is idempotent)."""
    while not stop.is_set():
        heartbeats = delivery.subscriptions.queue_heartbeats if delivery.subscriptions else None
        for work in (
            jobs.expire_overdue,
            jobs.flag_nearing_deadline,
            jobs.run_due_jobs,
            heartbeats,
            delivery.run_due,
        ):
            if work is None:
                continue
            try:
                await work()
            except Exception as exc:  # keep the loop alive; the next pass tries again
                log.error("background %s failed (%s)", work.__name__, type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
