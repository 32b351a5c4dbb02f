"""Outbox leases (docs/durability.md): a worker whose lease ran out while it was still delivering
(or rendering a notice) finds the work done by the worker that took over, and neither undoes nor
repeats it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future
from datetime import timedelta
from typing import Any

import httpx

from fhir_adapter.bootstrap import Container
from fhir_adapter.ports.delivery import DeliveryAttempt
from fhir_adapter.ports.store import RENDER
from fhir_adapter.services.delivery import DeliveryService
from fhir_adapter.services.rendering import NoticeRendering
from tests.e2e.test_reports import api, approved_request, ehr_transport, loop_container, receiver
from tests.fakes import FrozenClock
from tests.receiver import Receiver
from tests.worker import render_notices

__all__ = ["api", "ehr_transport", "loop_container", "receiver"]  # fixtures, used by name


class Stalled:
    """A deliverer stuck on a slow network: it fails, but only when told to answer."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.answer = asyncio.Event()

    async def post_transaction(self, base_url: str, bundle: dict[str, Any]) -> DeliveryAttempt:
        self.called.set()
        await self.answer.wait()
        return DeliveryAttempt(False, "ReadTimeout")


async def test_a_worker_whose_lease_ran_out_leaves_the_delivery_to_the_one_that_took_over(
    api: httpx.AsyncClient, loop_container: Container, receiver: Receiver, clock: FrozenClock
) -> None:
    await approved_request(api, "-lease")  # the requester's notice goes through the outbox
    await render_notices(loop_container)
    live = loop_container.delivery
    stalled = Stalled()
    slow = DeliveryService(
        live.store, live.resources, live.directory, stalled, config=live.config, clock=clock
    )
    first = asyncio.create_task(slow.run_due())
    await asyncio.wait_for(stalled.called.wait(), timeout=10)
    clock.advance(seconds=live.config.lease_seconds + 1)  # its lease runs out
    assert await live.run_due() == 1  # another worker takes the delivery over and makes it
    stalled.answer.set()
    assert await first == 1  # then the first one's attempt fails, too late
    async with loop_container.store.transaction(write=False) as tx:
        (item,) = [i for i in await tx.outbox.items(state=None) if i.destination != RENDER]
        communication = await tx.resources.read("Communication", item.communication_id)
    assert item.state == "delivered"  # not back to pending, so not sent again
    assert communication is not None
    assert communication.content["status"] == "completed"
    assert communication.version_id == 3  # drafted, rendered, completed once
    assert len(receiver.of_type("Communication")) == 1


class HeldRender(Executor):
    """A render worker that finishes only when told: its lease runs out meanwhile."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.held: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self.finished = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if self.finished:
            future.set_result(fn(*args))
        else:
            self.held.append((future, fn, args))
        self.started.set()
        return future

    def finish(self) -> None:
        """Finish what is held, and run what comes later at once."""
        self.finished = True
        for future, fn, args in self.held:
            future.set_result(fn(*args))


async def test_a_render_whose_lease_ran_out_is_not_rendered_or_delivered_twice(
    api: httpx.AsyncClient, loop_container: Container, clock: FrozenClock
) -> None:
    await approved_request(api, "-render-lease")
    live = loop_container.delivery.rendering
    held = HeldRender()
    slow = NoticeRendering(
        live.store,
        clock=clock,
        lease_seconds=live.lease_seconds,
        max_attempts=live.max_attempts,
        backoff=lambda item: timedelta(seconds=1),
        executor=held,
    )
    first = asyncio.create_task(slow.run_due())
    await asyncio.wait_for(held.started.wait(), timeout=10)
    clock.advance(seconds=live.lease_seconds + 1)  # its leases run out
    assert await render_notices(loop_container) == 2  # another worker renders both
    held.finish()
    assert await first == 2  # then the first one finishes, too late
    async with loop_container.store.transaction(write=False) as tx:
        items = await tx.outbox.items(state=None)
        communications = [
            await tx.resources.read("Communication", i.communication_id)
            for i in items
            if i.destination == RENDER
        ]
    assert sorted((i.destination, i.state) for i in items) == [
        ("provider-endpoint", "pending"),  # the requester's copy, owed once
        (RENDER, "rendered"),
        (RENDER, "rendered"),
    ]
    assert {c.version_id for c in communications if c} == {2}  # drafted, rendered once
