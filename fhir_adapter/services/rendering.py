"""Rendering a decision's notices after the answer (issue #13): the decision stores each notice in
`preparation` with a render job (an outbox item, destination `render`, carrying the letter as
decided); the worker renders it off the event loop, then in one transaction gives the
Communication its letter, moves it on (`completed`, or `in-progress` with its delivery owed) and
closes the job. A failed render is retried with backoff and, after the last attempt, left as a
dead letter (`outbox list --state failed`, `outbox retry`): the notice itself stays stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

from fhir_adapter import telemetry
from fhir_adapter.notices import RenderedNotice
from fhir_adapter.notices.stored import render_stored
from fhir_adapter.ports.store import RENDER, OutboxItem, ResourceStore
from fhir_adapter.services.resources import Clock, with_meta
from fhir_adapter.workflow.letters import with_rendered_letter

log = logging.getLogger(__name__)


def render_letters(letters: list[Any]) -> list[RenderedNotice | str]:
    """Each stored letter rendered, or the name of the error that stopped it: a plain function
    of JSON, so the render process runs several letters a round trip (docs/performance.md)."""
    results: list[RenderedNotice | str] = []
    for letter in letters:
        try:
            results.append(render_stored(letter))
        except Exception as exc:  # that letter only; the others are rendered
            results.append(type(exc).__name__)
    return results


class NoticeRendering:
    """Runs the render jobs of the outbox (the delivery service's `rendering`)."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        clock: Clock,
        lease_seconds: float,
        max_attempts: int,
        backoff: Callable[[OutboxItem], timedelta],
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.executor = executor  # None: the event loop's default thread pool

    async def run_due(self, *, limit: int = 20) -> int:
        """Render every due notice once; returns how many were tried. The letters claimed
        together are rendered in one call to the executor (one round trip to the render
        process), each recorded in a transaction of its own."""
        now = self.clock()
        async with self.store.transaction() as tx:
            items = await tx.outbox.claim(
                now=now,
                lease_until=now + timedelta(seconds=self.lease_seconds),
                limit=limit,
                render=True,
            )
        if not items:
            return 0
        letters = [(item.payload or {}).get("letter") for item in items]
        try:  # CPU-bound pure Python: off the event loop, so answers keep flowing
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, render_letters, letters
            )
        except Exception as exc:  # a broken pool: every letter of the call is retried
            results = [type(exc).__name__] * len(items)
        for item, result in zip(items, results, strict=True):
            try:
                if isinstance(result, RenderedNotice):
                    await self._record(item, result, (item.payload or {}).get("deliver_to"))
                else:  # a bad letter: retried, then a dead letter
                    await self._not_rendered(item, result)
            except Exception as exc:  # a store hiccup: the lease runs out and it is retried
                log.error("render %s crashed (%s)", item.id, type(exc).__name__)
        return len(items)

    async def _record(
        self, item: OutboxItem, rendered: RenderedNotice, destination: str | None
    ) -> None:
        now = self.clock()
        async with self.store.transaction() as tx:
            current = await tx.resources.read_for_update("Communication", item.communication_id)
            # Another worker rendered it (its lease ran out), or it was withdrawn: nothing to add.
            if current is not None and current.content.get("status") == "preparation":
                updated = with_rendered_letter(
                    {k: v for k, v in current.content.items() if k != "meta"},
                    rendered,
                    delivered_now=destination is None,
                    now=now,
                )
                await tx.resources.replace(
                    current, with_meta(updated, current.id, current.version_id + 1, now), now=now
                )
                if destination is not None:
                    await tx.outbox.add(OutboxItem.owed(current.id, destination, now))
            await tx.outbox.set(item.id, state="rendered", delivered_at=now)
        telemetry.delivery_attempted(RENDER, "delivered")  # destination "render": done
        log.info("render %s of Communication/%s done", item.id, item.communication_id)

    async def _not_rendered(self, item: OutboxItem, error: str) -> None:
        now = self.clock()
        async with self.store.transaction() as tx:
            if item.attempts >= self.max_attempts:
                await tx.outbox.set(item.id, state="failed", error=f"render: {error}")
            else:
                await tx.outbox.set(
                    item.id,
                    state="pending",
                    next_attempt_at=now + self.backoff(item),
                    error=f"render: {error}",
                )
        failed = item.attempts >= self.max_attempts
        telemetry.delivery_attempted(RENDER, "failed" if failed else "retry")
        log.warning("render %s attempt %d failed (%s)", item.id, item.attempts, error)
