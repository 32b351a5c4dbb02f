"""How long a batch of AuditEvents written to SQLite holds up the event loop: the audit trail
stores its spooled events up to 500 a transaction (services/audit.py), and on SQLite a writer's
statements may run on the event loop (store/sqlite_driver.py). A ticker coroutine sleeping 1 ms
at a time measures the longest gap between its wake-ups while one transaction stores the batch.

    .venv/bin/python benchmarks/sqlite_loop_gap.py [--events 500] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime

from fhir_adapter.access.audit import AuditRecord, audit_event
from fhir_adapter.services.resources import with_meta
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore


async def one_batch(store: SqlResourceStore, events: int) -> tuple[float, float]:
    """(ms the transaction took, ms of the longest gap between the ticker's wake-ups)."""
    now = datetime.now(UTC)
    batch = [
        with_meta(
            audit_event(AuditRecord("read", 200, now, "client", "127.0.0.1", "Task", f"t{n}")),
            str(uuid.uuid4()),
            1,
            now,
        )
        for n in range(events)
    ]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            gaps.append(time.perf_counter() - last)
            last = time.perf_counter()

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    async with store.transaction() as tx:
        for event in batch:
            await tx.resources.insert(event, now=now)
    took = time.perf_counter() - started
    stop.set()
    await ticking
    return took * 1000, max(gaps) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite+aiosqlite:///{folder}/gap.db")
        await upgrade_database(engine)
        store = SqlResourceStore(engine, base_url="http://adapter/fhir")
        try:
            for _ in range(args.rounds):
                took, gap = await one_batch(store, args.events)
                print(
                    f"{args.events} AuditEvents in one transaction: {took:.1f} ms;"
                    f" longest event-loop gap {gap:.1f} ms"
                )
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
