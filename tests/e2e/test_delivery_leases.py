"""Outbox leases (docs/durability.md): a worker whose lease ran out while it was still delivering
finds the delivery done by the worker that took over, and neither undoes nor repeats it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fhir_adapter.bootstrap import Container
from fhir_adapter.ports.delivery import DeliveryAttempt
from fhir_adapter.services.delivery import DeliveryService
from tests.e2e.test_reports import api, approved_request, ehr_transport, loop_container, receiver
from tests.fakes import FrozenClock
from tests.receiver import Receiver

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
        (item,) = await tx.outbox.items(state=None)
        communication = await tx.resources.read("Communication", item.communication_id)
    assert item.state == "delivered"  # not back to pending, so not sent again
    assert communication is not None
    assert communication.content["status"] == "completed"
    assert communication.version_id == 2  # completed once
    assert len(receiver.of_type("Communication")) == 1
