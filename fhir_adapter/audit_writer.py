"""The audit trail's writer process (issue #18): on PostgreSQL, `serve` stores its AuditEvents
from a process of its own, so the answering process only spools them.

Storing a batch (its index rows and statements) was about a tenth of a read's CPU, all of it on
the answering process's one core, and a batch of a few hundred events held its event loop for
tens of milliseconds (docs/performance.md). The flusher (services/audit.py) hands this process
the path of each spool segment it holds; the process reads the segment's events from the file,
stores them with an engine of its own, and answers how many were new. The spool's rules do not
change: the answering process keeps the segment locked while it is stored and deletes it only
after the answer, so a writer killed midway loses nothing (the flush fails, the segment stays, the
next flush stores it again through a new writer, asking which events are stored already).

SQLite keeps storing in the answering process: a second process writing would wait for SQLite's
one write lock in the busy handler, which the answering process's writers avoid (store/sql.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fhir_adapter.services.audit import read_events, store_events
from fhir_adapter.services.background import HelperProcess, exit_with
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.sql import SqlResourceStore


class AuditWriterProcess:
    """One spawned process that stores spool segments (a HelperProcess: spawned again when it
    died). Started on the first segment, so a process that records nothing never starts one."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._process: HelperProcess | None = None

    async def store_segment(self, path: Path, *, check: bool) -> int:
        if self._process is None:
            self._process = HelperProcess("audit writer", _start, (self.database_url, os.getpid()))
        return await asyncio.wrap_future(self._process.submit(_store_segment, str(path), check))

    def close(self) -> None:
        if self._process is not None:
            self._process.shutdown(wait=True)
            self._process = None


# -- in the writer process ---------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_store: SqlResourceStore | None = None


def _start(database_url: str, parent: int) -> None:
    """The writer's initializer: its own event loop and store, and gone when `serve` is."""
    global _loop, _store
    exit_with(parent)
    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    # One segment at a time: the pool opens one connection and keeps it.
    _store = SqlResourceStore(create_engine(database_url))


def _store_segment(path: str, check: bool) -> int:
    assert _loop is not None and _store is not None, "the initializer runs first"
    return _loop.run_until_complete(store_events(_store, read_events(Path(path)), check=check))
