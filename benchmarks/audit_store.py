"""What storing the audit trail costs, per AuditEvent: the CPU of the process that stores it and
PostgreSQL's. Every read adds one AuditEvent, which the audit trail stores in batches of up to
500 (services/audit.py `store_events`, the function the audit writer process runs), so on the
read path this is paid once per read, by a process beside the answering one and by PostgreSQL,
both on the machine's cores.

PostgreSQL's CPU is the sum over every `postgres` process of this machine and its reaped
children (from /proc) across the timed batches, so run it on a quiet machine; the figures are
medians of `--rounds`.

`--revision 0009` migrates a new database only that far, to the schema before migration 0010
dropped the index rows' foreign keys, so both schemas are measured with the same code.

    .venv/bin/python benchmarks/audit_store.py [--batches 20] [--rounds 3] [--revision head]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

from submit_throughput import postgres_cpu_seconds

from fhir_adapter.access.audit import AuditRecord, audit_event
from fhir_adapter.services.audit import STORE_BATCH, store_events
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore

DEFAULT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def batch() -> list[dict[str, object]]:
    """A batch of read events as the API records them, each with its id."""
    now = datetime.now(UTC)
    return [
        {
            **audit_event(AuditRecord("read", 200, now, "client-1", "127.0.0.1", "Task", f"t{n}")),
            "id": str(uuid.uuid4()),
        }
        for n in range(STORE_BATCH)
    ]


async def one_round(store: SqlResourceStore, batches: int) -> tuple[float, float, float]:
    """(this process's CPU, PostgreSQL's CPU, wall time), in ms per event."""
    events = [batch() for _ in range(batches)]
    postgres, own, wall = postgres_cpu_seconds(), time.process_time(), time.perf_counter()
    for each in events:
        await store_events(store, each, check=False)
    count = batches * STORE_BATCH
    return (
        1000 * (time.process_time() - own) / count,
        1000 * (postgres_cpu_seconds() - postgres) / count,
        1000 * (time.perf_counter() - wall) / count,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 500 a round")
    parser.add_argument("--rounds", type=int, default=3, help="the medians of this many")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--revision", default="head", help="migrate a new database this far")
    args = parser.parse_args()
    engine = create_engine(args.database_url)
    try:
        await upgrade_database(engine, args.revision)
        store = SqlResourceStore(engine)
        await store_events(store, batch(), check=False)  # warm: connections, statement caches
        rounds = [await one_round(store, args.batches) for _ in range(args.rounds)]
    finally:
        await engine.dispose()
    own, postgres, wall = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(
        f"schema {args.revision}; {args.batches} batches of {STORE_BATCH} AuditEvents, "
        f"{args.rounds} round(s), medians: "
        f"per event {own:.3f} ms of this process's CPU, {postgres:.3f} ms of PostgreSQL's CPU, "
        f"{wall:.3f} ms of wall time"
    )


if __name__ == "__main__":
    asyncio.run(main())
