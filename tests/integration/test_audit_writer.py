"""The audit trail's writer process (audit_writer.py): it stores the segments the serving process
spooled, so the serving process's own store is never written by a flush; a writer killed midway
loses no event and stores none twice; it exits when its serving process is killed; and the
composition root gives one to a PostgreSQL `serve` only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.access.audit import AuditRecord
from fhir_adapter.audit_writer import AuditWriterProcess
from fhir_adapter.bootstrap import build_container
from fhir_adapter.config import Settings
from fhir_adapter.services.audit import AuditTrail
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import resources
from tests.integration.test_render_process import alive


class UnwrittenStore(SqlResourceStore):
    """The serving process's store: a flush through the writer must not open a transaction."""

    def transaction(self, *, write: bool = True) -> Any:
        raise AssertionError("the serving process stored audit events itself")


def record(trail: AuditTrail, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        trail.record(
            AuditRecord("read", 200, datetime.now(UTC), "client-1", "127.0.0.1", "Task", f"t{n}")
        )


async def stored_events(engine: AsyncEngine) -> list[str]:
    """The entity of every stored AuditEvent, one entry per stored row."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(resources.c.content).where(resources.c.resource_type == "AuditEvent")
        )
        return sorted(row.content["entity"][0]["what"]["reference"] for row in rows)


def children(parent: int | None = None) -> set[int]:
    """The living processes `parent` (by default this process) spawned for a process pool
    (Linux /proc): multiprocessing's resource tracker is not one of them."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in command:
                found.add(int(entry))
    return found


@asynccontextmanager
async def writer_trail(
    engine: AsyncEngine, database_url: str, spool: Path
) -> AsyncIterator[tuple[AuditTrail, AuditWriterProcess]]:
    writer = AuditWriterProcess(database_url)
    trail = AuditTrail(UnwrittenStore(engine), writer=writer, spool_dir=spool)
    try:
        yield trail, writer
    finally:
        writer.close()


async def test_the_writer_process_stores_what_was_spooled(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    before = children()
    async with writer_trail(engine, database_url, tmp_path / "spool") as (trail, _writer):
        record(trail, 30)
        assert children() == before  # no process until there is something to store

        assert await trail.flush() == 30

        assert len(children() - before) == 1
        assert await stored_events(engine) == sorted(f"Task/t{n}" for n in range(30))
        assert list((tmp_path / "spool").glob("*.jsonl")) == []  # the segment is deleted
        record(trail, 5, start=30)  # the same process stores the next segments
        assert await trail.flush() == 5
        assert len(await stored_events(engine)) == 35


async def test_a_writer_killed_midway_loses_nothing_and_stores_nothing_twice(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    before = children()
    async with writer_trail(engine, database_url, tmp_path / "spool") as (trail, _writer):
        record(trail, 10)
        assert await trail.flush() == 10
        (first,) = children() - before
        record(trail, 20, start=10)

        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        # The pool notices the death before this call (a new writer takes the segment) or
        # during it (the flush fails and keeps the segment); either way nothing is lost.
        with contextlib.suppress(BrokenProcessPool):
            await trail.flush()
        await trail.flush()

        (second,) = children() - before
        assert second != first
        assert await stored_events(engine) == sorted(f"Task/t{n}" for n in range(30))
        assert list((tmp_path / "spool").glob("*.jsonl")) == []


async def test_a_segment_stored_again_asks_first(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """As after a writer that committed and died before it answered: the retry asks."""
    async with writer_trail(engine, database_url, tmp_path / "spool") as (trail, writer):
        record(trail, 12)
        (segment,) = (tmp_path / "spool").glob("*.jsonl")

        assert await writer.store_segment(segment, check=False) == 12
        assert await writer.store_segment(segment, check=True) == 0

        assert len(await stored_events(engine)) == 12


PARENT = """
import asyncio, os, sys
from pathlib import Path
from fhir_adapter.audit_writer import AuditWriterProcess
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database

async def main():
    engine = create_engine(sys.argv[1])
    await upgrade_database(engine)
    await engine.dispose()
    writer = AuditWriterProcess(sys.argv[1])
    empty = Path(sys.argv[2])
    empty.write_text("")
    assert await writer.store_segment(empty, check=False) == 0
    print("ready", flush=True)
    sys.stdin.read()  # until the test kills this process

asyncio.run(main())
"""


def test_the_writer_exits_when_its_serve_process_is_killed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, url, str(tmp_path / "empty.jsonl")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        writers = children(parent.pid)
        assert writers, "no writer process was started"

        parent.kill()  # SIGKILL: no cleanup of its own runs
        parent.wait(timeout=10)

        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in writers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in writers), "the writer outlived its serve process"


@pytest.mark.parametrize(
    ("backend", "setting", "expected"),
    [
        pytest.param("postgres", True, True, marks=pytest.mark.postgres),
        pytest.param("postgres", False, False, marks=pytest.mark.postgres),
        ("sqlite", True, False),
    ],
)
async def test_a_postgresql_serve_gets_a_writer_process_and_sqlite_does_not(
    backend: str, setting: bool, expected: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_database_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    settings = Settings(
        database_url=url, audit_writer_process=setting, audit_spool_dir=tmp_path / "spool"
    )
    container = await build_container(settings)
    try:
        assert isinstance(container.audit.writer, AuditWriterProcess) is expected
    finally:
        await container.aclose()
