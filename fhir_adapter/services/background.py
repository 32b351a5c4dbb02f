"""The background loop every `serve` process runs: deadline sweep, directory retries, notice
rendering and deliveries.

All of it is claimed through the database, so any number of processes may run it at once."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from fhir_adapter.services.delivery import DeliveryService
from fhir_adapter.services.second_opinion.jobs import WorkflowJobs

log = logging.getLogger(__name__)

RENDER_BATCH = 4  # render jobs leased at once, rendered in one round trip to the render process
# The render process runs this much nicer than the answers, and on Linux in the idle scheduling
# class: under a burst the answers and PostgreSQL (whose PAS budget is seconds) get the cores
# first, and at once when they wake, and the letters (whose deadline is hours) catch up when
# the burst is over (docs/performance.md).
RENDER_NICENESS = 10
PARENT_CHECK_SECONDS = 1.0  # how soon a render process notices that its `serve` is gone


def _serve_the_answers(parent: int) -> None:
    """The render process's initializer: a lower CPU priority than the process it serves, and
    gone when that process is (a SIGKILLed `serve` must not leave its render process behind)."""
    os.nice(RENDER_NICENESS)
    if hasattr(os, "SCHED_IDLE"):  # Linux: it runs only on a core nothing else wants right now
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    exit_with(parent)


def exit_with(parent: int) -> None:
    """Exit this (helper) process soon after `parent` is gone, even when it died by SIGKILL."""
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)  # orphaned: what it held is leased or spooled, and another process takes it on


class HelperProcess(Executor):
    """One spawned helper process (the letters' render process, the audit writer), spawned again
    when it died (killed, out of memory): a dead process pool refuses every later call, which
    would leave every later letter a dead letter, or every later AuditEvent in the spool, until
    `serve` restarts. The call that broke it fails, and is retried like any failed attempt.
    Spawned, not forked: it holds none of this process's sockets or connections."""

    def __init__(
        self, name: str, initializer: Callable[..., None], initargs: tuple[Any, ...]
    ) -> None:
        self.name, self._initializer, self._initargs = name, initializer, initargs
        self._pool = self._spawn()

    def _spawn(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=get_context("spawn"),
            initializer=self._initializer,
            initargs=self._initargs,
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            log.warning("the %s process died; starting another", self.name)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._spawn()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def render_pool() -> HelperProcess:
    """The render process the background loop hands its letters to: at a lower priority than
    the answers, gone when this process is."""
    return HelperProcess("render", _serve_the_answers, (os.getpid(),))


async def run_background(
    jobs: WorkflowJobs,
    delivery: DeliveryService,
    stop: asyncio.Event,
    *,
    interval_seconds: float = 2.0,
) -> None:
    """Until `stop` is set: one pass of each kind of work, then a pause (each pass is idempotent)
    that ends early when a commit queues outbox work, such as a decision's notices to render.

    The letters are rendered in a process of their own unless the caller gave the renderer an
    executor: the PDF is CPU-bound pure Python, and in a thread it holds the GIL the answers need
    (docs/performance.md: on 2 cores, answers took 2.5 times as long beside a render thread as
    beside a render process). Spawned, not forked: it holds none of this process's sockets."""
    rendering = delivery.rendering
    if rendering.executor is not None:
        await _passes(jobs, delivery, stop, interval_seconds)
        return
    with render_pool() as pool:
        rendering.executor = pool
        try:
            await _passes(jobs, delivery, stop, interval_seconds)
        finally:
            rendering.executor = None


async def _passes(
    jobs: WorkflowJobs, delivery: DeliveryService, stop: asyncio.Event, interval_seconds: float
) -> None:
    queued = delivery.store.work_queued
    while not stop.is_set():
        queued.clear()  # what is queued from here on gets another pass straight away
        heartbeats = delivery.subscriptions.queue_heartbeats if delivery.subscriptions else None
        # The letters render in their own process meanwhile: the loop goes on with the rest.
        await asyncio.gather(
            _each((lambda: _render_some(delivery, queued),)),
            _each(
                (
                    jobs.expire_overdue,
                    jobs.flag_nearing_deadline,
                    jobs.run_due_jobs,
                    heartbeats,
                    delivery.run_due,
                )
            ),
        )
        await _pause(stop, queued, interval_seconds)


async def _render_some(delivery: DeliveryService, queued: asyncio.Event) -> None:
    """A few letters at a time (each render job is leased only while it waits its turn); when
    there may be more, the next pass comes straight away."""
    if await delivery.rendering.run_due(limit=RENDER_BATCH) == RENDER_BATCH:
        queued.set()


async def _each(works: tuple[Callable[[], Awaitable[object]] | None, ...]) -> None:
    """One pass of each kind of work, in order."""
    for work in works:
        if work is None:
            continue
        try:
            await work()
        except Exception as exc:  # keep the loop alive; the next pass tries again
            log.error("background %s failed (%s)", work.__name__, type(exc).__name__)


async def _pause(stop: asyncio.Event, queued: asyncio.Event, seconds: float) -> None:
    """Wait for the interval, for new outbox work, or for the stop, whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(queued.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
