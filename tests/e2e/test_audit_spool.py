"""The audit spool (docs/durability.md): events recorded by a process SIGKILLed before they were
flushed are stored by the next process, once, even when the crash came between the commit and the
spool's deletion; the spool of a live process is never taken from it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.access.audit import AuditRecord
from fhir_adapter.services import audit
from fhir_adapter.services.audit import AuditTrail, default_spool_dir
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import resources

EVENTS = 25

# Run in a child process: record events, optionally flush them, and die by SIGKILL, which no
# Python code can intercept. CRASH_AFTER_COMMIT kills it after the store committed the events
# but before the spool segment was deleted.
CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from fhir_adapter.access.audit import AuditRecord
    from fhir_adapter.services import audit
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.sql import SqlResourceStore

    url, spool, count, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def die(_segment):
        os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        store = SqlResourceStore(create_engine(url))
        trail = audit.AuditTrail(store, spool_dir=spool)
        for i in range(count):
            trail.record(AuditRecord("read", 200, datetime.now(UTC), "c", "127.0.0.1", "Patient", str(i)))
        if mode == "crash-after-commit":
            audit._Segment.discard = die
            await trail.flush()
        die(None)

    asyncio.run(main())
    """
)


def run_child(url: str, spool: Path, mode: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(spool), str(EVENTS), mode],
        capture_output=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()


async def audit_count(engine: AsyncEngine) -> int:
    statement = select(func.count()).where(resources.c.resource_type == "AuditEvent")
    async with engine.connect() as conn:
        return int((await conn.execute(statement)).scalar_one())


def record(trail: AuditTrail, n: int) -> None:
    for i in range(n):
        trail.record(AuditRecord("read", 200, datetime.now(UTC), "c", None, "Patient", str(i)))


async def test_events_of_a_killed_process_are_replayed(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    run_child(database_url, spool, "before-flush")
    assert await audit_count(engine) == 0
    assert len(list(spool.iterdir())) == 1  # the dead process's segment, left behind
    trail = AuditTrail(SqlResourceStore(engine), spool_dir=spool)
    assert await trail.replay() == EVENTS
    assert await audit_count(engine) == EVENTS
    assert list(spool.iterdir()) == []
    assert await trail.replay() == 0


async def test_a_crash_between_commit_and_delete_stores_each_event_once(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    run_child(database_url, spool, "crash-after-commit")
    assert await audit_count(engine) == EVENTS  # committed, but the segment is still there
    assert len(list(spool.iterdir())) == 1
    trail = AuditTrail(SqlResourceStore(engine), spool_dir=spool)
    assert await trail.replay() == 0  # every event was stored already: none twice
    assert await audit_count(engine) == EVENTS
    assert list(spool.iterdir()) == []


async def test_a_live_process_keeps_its_spool(engine: AsyncEngine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = SqlResourceStore(engine)
    owner, other = AuditTrail(store, spool_dir=spool), AuditTrail(store, spool_dir=spool)
    record(owner, 3)
    assert await other.replay() == 0  # locked by its owner, who is alive
    assert await audit_count(engine) == 0
    record(owner, 2)
    assert await owner.flush() == 5
    await owner.close()
    assert await audit_count(engine) == 5
    assert list(spool.iterdir()) == []


def test_the_default_spool_directory() -> None:
    assert default_spool_dir("sqlite+aiosqlite:////data/fhir.db") == Path(
        "/data/fhir.db.audit-spool"
    )
    elsewhere = default_spool_dir("postgresql+asyncpg://u@db/fhir")
    assert elsewhere.name.startswith("fhir-adapter-audit-")
    assert elsewhere != default_spool_dir("postgresql+asyncpg://u@db/other")


class FailingOnce(SqlResourceStore):
    """Fails the `fail_at`-th transaction, once, before it writes anything."""

    def __init__(self, engine: AsyncEngine, fail_at: int) -> None:
        super().__init__(engine)
        self.opened, self.fail_at = 0, fail_at

    def transaction(self, *, write: bool = True) -> Any:
        self.opened += 1
        if self.opened == self.fail_at:
            raise ConnectionError("the database went away")
        return super().transaction(write=write)


async def test_a_flush_retried_after_a_partial_failure_stores_each_event_once(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment's first flush does not ask which events are stored (issue #18); when a batch
    failed after others committed, the next flush asks, so nothing is stored twice or lost."""
    monkeypatch.setattr(audit, "STORE_BATCH", 2)
    trail = AuditTrail(FailingOnce(engine, fail_at=2), spool_dir=tmp_path / "spool")
    record(trail, 5)
    with pytest.raises(ConnectionError):
        await trail.flush()
    assert await audit_count(engine) == 2  # the first batch committed
    assert await trail.flush() == 3
    assert await audit_count(engine) == 5
    await trail.close()
    assert list((tmp_path / "spool").iterdir()) == []
