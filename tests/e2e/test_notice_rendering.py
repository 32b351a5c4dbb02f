"""Issue #13: a 200 means stored, decided and every consequence durably queued. A decision's
notices are stored in `preparation` with a render job in the answering transaction; the worker
renders them right after (woken by the commit), from the letter as decided, and never loses one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fhir_adapter.bootstrap import Container
from fhir_adapter.ports.store import RENDER, OutboxItem
from fhir_adapter.services import rendering
from fhir_adapter.services.background import run_background
from tests.e2e.test_notices import letter, notices, submit
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.worker import render_notices


async def outbox(container: Container, state: str | None = None) -> list[OutboxItem]:
    async with container.store.transaction(write=False) as tx:
        return await tx.outbox.items(state=state, limit=1000)


def kinds(notice: dict[str, Any]) -> list[str]:
    return [next(iter(p)) for p in notice.get("payload") or []]


async def test_notices_are_in_preparation_at_the_answer_and_completed_by_the_worker(
    client: httpx.AsyncClient, container: Container
) -> None:
    keys = await submit(client, example_request("denied"))
    drafted = await notices(client, keys["ServiceRequest"])
    assert {n["status"] for n in drafted.values()} == {"preparation"}
    assert all("payload" not in n and n["about"] and n["identifier"] for n in drafted.values())
    jobs = await outbox(container)
    assert sorted((j.destination, j.communication_id) for j in jobs) == sorted(
        (RENDER, n["id"]) for n in drafted.values()
    )  # one render job each, and no delivery owed before there is a letter
    assert all(j.state == "pending" and j.payload and j.payload["letter"] for j in jobs)

    assert await render_notices(container) == 2
    done = await notices(client, keys["ServiceRequest"])
    assert done["member"]["status"] == "completed"  # read through the API: nothing travels
    assert done["requester"]["status"] == "in-progress"  # owed to the requester's endpoint
    for notice in done.values():
        assert kinds(notice) == ["contentString", "contentAttachment", "contentAttachment"]
        assert (
            notice["identifier"]
            == drafted["member" if notice is done["member"] else "requester"]["identifier"]
        )  # the receiver's conditional create keys on it
    items = {(i.destination, i.state) for i in await outbox(container)}
    assert items == {(RENDER, "rendered"), ("provider-endpoint", "pending")}
    assert await render_notices(container) == 0  # each rendered once


async def test_the_worker_renders_the_letter_as_decided(
    client: httpx.AsyncClient, container: Container
) -> None:
    bundle = example_request("denied", "-renamed")
    keys = await submit(client, bundle)
    patient = (await client.get(f"/{keys['Patient']}")).json()
    before = patient["name"][0]["family"]
    patient["name"] = [{"given": ["Someone"], "family": "Else"}]
    assert (await client.put(f"/{keys['Patient']}", json=patient)).status_code == 200
    await render_notices(container)
    html, pdf_text = letter((await notices(client, keys["ServiceRequest"]))["member"])
    assert before in html and before in pdf_text  # the member as the decision named them
    assert "Else" not in html


async def test_a_failed_render_is_retried_then_a_dead_letter_and_never_lost(
    client: httpx.AsyncClient,
    container: Container,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(letter: dict[str, Any]) -> Any:
        raise RuntimeError("renderer down")

    monkeypatch.setattr(rendering, "render_stored", broken)
    container.delivery.rendering.max_attempts = 2
    keys = await submit(client, example_request("denied", "-broken"))
    assert await render_notices(container) == 2
    retrying = await outbox(container, "pending")
    assert {(i.destination, i.attempts, i.last_error) for i in retrying} == {
        (RENDER, 1, "render: RuntimeError")
    }
    clock.advance(hours=2)
    assert await render_notices(container) == 2
    failed = await outbox(container, "failed")  # dead letters, listed as deliveries' are
    assert len(failed) == 2 and {i.destination for i in failed} == {RENDER}
    drafted = await notices(client, keys["ServiceRequest"])
    assert {n["status"] for n in drafted.values()} == {"preparation"}  # still stored

    monkeypatch.undo()
    assert await container.delivery.retry_failed() == 2  # `fhir-adapter outbox retry`
    assert await render_notices(container) == 2
    done = await notices(client, keys["ServiceRequest"])
    assert {n["status"] for n in done.values()} == {"completed", "in-progress"}
    assert all(len(kinds(n)) == 3 for n in done.values())


async def test_one_bad_letter_of_a_batch_is_retried_and_the_others_are_recorded(
    client: httpx.AsyncClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The letters claimed together are rendered in one call to the render process; each is
    recorded, or retried, on its own."""
    real = rendering.render_stored

    def member_letters_fail(letter: dict[str, Any]) -> Any:
        if letter["kind"].endswith("-member"):
            raise RuntimeError("bad letter")
        return real(letter)

    monkeypatch.setattr(rendering, "render_stored", member_letters_fail)
    keys = await submit(client, example_request("denied", "-batch"))
    assert await container.delivery.rendering.run_due(limit=10) == 2  # one call, both letters

    done = await notices(client, keys["ServiceRequest"])
    assert done["requester"]["status"] == "in-progress" and len(kinds(done["requester"])) == 3
    assert done["member"]["status"] == "preparation"
    renders = [i for i in await outbox(container) if i.destination == RENDER]
    assert sorted((i.state, i.attempts, i.last_error) for i in renders) == [
        ("pending", 1, "render: RuntimeError"),
        ("rendered", 1, None),
    ]


async def test_the_worker_wakes_on_the_commit_not_on_its_poll_interval(
    client: httpx.AsyncClient, container: Container
) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_background(container.workflow.jobs, container.delivery, stop, interval_seconds=3600)
    )
    try:
        await asyncio.sleep(0)  # its first pass finds nothing, then it waits an hour at most
        keys = await submit(client, example_request("denied", "-woken"))
        for _ in range(3000):  # polled; done long before the hour unless the commit wakes it
            found = await notices(client, keys["ServiceRequest"])
            if {n["status"] for n in found.values()} == {"completed", "in-progress"}:
                break
            await asyncio.sleep(0.01)
        assert {n["status"] for n in found.values()} == {"completed", "in-progress"}
    finally:
        stop.set()
        await worker


def test_the_render_process_yields_the_cores_to_the_answers() -> None:
    """The letters render in a process of lower CPU priority than the one that answers, so a
    burst of submissions is answered first and its letters follow (issue #13)."""
    import os

    from fhir_adapter.services.background import RENDER_NICENESS, render_pool

    with render_pool() as pool:
        niceness = pool.submit(os.nice, 0).result(timeout=60)
        policy = pool.submit(os.sched_getscheduler, 0).result(timeout=60)

    assert niceness == min(os.nice(0) + RENDER_NICENESS, 19)
    # Linux: the idle class, so an answer or PostgreSQL waking up takes the core at once
    assert policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the answering process keeps its own
