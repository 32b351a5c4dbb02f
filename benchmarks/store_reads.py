"""What a PostgreSQL read costs the answering process in the store alone: a read by id, a small
search and a page of 50, each through the store's read transaction, with its SELECTs run by
asyncpg itself (store/driver_reads.py) and through SQLAlchemy's execution and result layers,
alternately in the same process (one read at a time; the process's CPU per read, from
`time.process_time`, so PostgreSQL's own work is not in it). The ratio is SQLAlchemy's CPU over
the driver's: how many times cheaper the driver path is.

    .venv/bin/python benchmarks/store_reads.py [--reads 2000] [--rounds 3]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore

DEFAULT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


async def seed(store: SqlResourceStore, run: str) -> None:
    """60 Tasks of this run's member (a page of 50 finds 50 of them)."""
    async with store.transaction() as tx:
        for n in range(60):
            await tx.resources.insert(
                {
                    "resourceType": "Task",
                    "id": f"{run}-t{n}",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": f"Patient/{run}-member"},
                },
                now=datetime.now(UTC),
            )


def task_search(run: str, count: int) -> SearchQuery:
    params = [("patient", f"{run}-member"), ("_count", str(count))]
    return parse_search("Task", params, base_url=None, default_count=20, max_count=100)


async def cpu_per_read(store: SqlResourceStore, what: str, run: str, reads: int) -> float:
    """Milliseconds of this process's CPU per read of `what`."""
    small, page = task_search(run, 3), task_search(run, 50)
    start = time.process_time()
    for _ in range(reads):
        async with store.transaction(write=False) as tx:
            if what == "read by id":
                found = await tx.resources.read("Task", f"{run}-t1")
                assert found is not None
            else:
                result = await tx.resources.search(small if what == "search, 3" else page)
                assert result.matches
    return (time.process_time() - start) / reads * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000, help="reads of each kind a round")
    parser.add_argument("--rounds", type=int, default=3, help="the medians of this many")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    args = parser.parse_args()
    engine = create_engine(args.database_url)
    await upgrade_database(engine)
    store = SqlResourceStore(engine)
    if store.driver_statements is None:
        raise SystemExit("store_reads.py measures PostgreSQL's reads: give a postgresql URL")
    driver_statements = store.driver_statements
    run = uuid.uuid4().hex[:8]
    try:
        await seed(store, run)
        kinds = ("read by id", "search, 3", "page of 50")
        figures: dict[tuple[str, str], list[float]] = {}
        for what in kinds:  # warm: each statement prepared on the pool's connections
            await cpu_per_read(store, what, run, 50)
        for _ in range(args.rounds):
            for what in kinds:
                for path in ("SQLAlchemy", "asyncpg"):
                    store.driver_statements = driver_statements if path == "asyncpg" else None
                    cost = await cpu_per_read(store, what, run, args.reads)
                    figures.setdefault((what, path), []).append(cost)
    finally:
        store.driver_statements = driver_statements
        await store.close()
    print(
        f"store reads on PostgreSQL, {args.reads} of each a round, {args.rounds} round(s), "
        "medians of this process's CPU per read"
    )
    print("| read | through SQLAlchemy, ms | by asyncpg itself, ms | ratio |")
    print("|---|---|---|---|")
    for what in kinds:
        through = statistics.median(figures[(what, "SQLAlchemy")])
        driven = statistics.median(figures[(what, "asyncpg")])
        print(f"| {what} | {through:.3f} | {driven:.3f} | {through / driven:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
