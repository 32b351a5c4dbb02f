"""The audit trail writer: AuditEvents are spooled to a local file as the API records them and
written to the store in batches (docs/durability.md).

Writing one transaction per request would double the cost of every read. Instead each event gets
its id when it is recorded and is appended, as one JSON line, to this process's spool segment (one
`write` on an O_APPEND descriptor: once it returns, the kernel holds the event, and a process
killed outright loses nothing). Every `flush_seconds` the flusher switches to a new segment, writes
the old one's events to the store in one transaction and deletes the segment. A segment is locked
(`flock`) by its process for as long as it lives; segments left unlocked, by a process that died,
are replayed at start and every `replay_seconds` by any process sharing the spool directory. Ids
are stable, and events already stored are skipped, so a replay after a crash between the commit
and the deletion writes nothing twice. A machine crash can still lose what the operating system
had not yet written to disk (no fsync per request).

Storing is most of what an event costs (issue #18: building its index rows and the batch's
statements, about a tenth of a read's CPU, and a batch held the event loop for tens of
milliseconds). Given a `writer` (on PostgreSQL, a process of its own: audit_writer.py), the
flusher hands it each segment's file to store instead, and keeps the segment locked, and deletes
it, exactly as when it stores the events itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from fhir_adapter.access.audit import (
    AuditRecord,
    StaffAuditRecord,
    audit_event,
    staff_audit_event,
)
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.services.resources import Clock, utc_now, with_meta

log = logging.getLogger(__name__)

SEGMENT_PREFIX = "audit-"
SEGMENT_SUFFIX = ".jsonl"
STORE_BATCH = 500  # events per transaction


def default_spool_dir(database_url: str) -> Path:
    """Next to a SQLite file; otherwise a directory in the system's temp dir named after the
    database, shared by every process of this machine that uses it."""
    marker = ":///"
    if database_url.startswith("sqlite") and marker in database_url:
        path = database_url.split(marker, 1)[1].split("?", 1)[0]
        if path and path != ":memory:":
            database = Path(path)
            return database.with_name(f"{database.name}.audit-spool")
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fhir-adapter-audit-{digest}"


@dataclass(slots=True)
class _Segment:
    """One spool file this process holds locked, and the events written to it."""

    path: Path
    fd: int
    events: list[dict[str, Any]] = field(default_factory=list)
    # Whether a flush of this segment was begun: only then can some of its events be stored.
    attempted: bool = False

    def discard(self) -> None:
        """Delete the file, then let go of it (deleted first, so no one replays it meanwhile)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


class SegmentWriter(Protocol):
    """Stores the events of a spool segment's file; returns how many were new."""

    async def store_segment(self, path: Path, *, check: bool) -> int: ...

    def close(self) -> None: ...


class AuditTrail:
    def __init__(
        self,
        store: ResourceStore,
        *,
        writer: SegmentWriter | None = None,
        spool_dir: Path | None = None,
        flush_seconds: float = 0.5,
        replay_seconds: float = 30.0,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.writer = writer
        self.spool_dir = spool_dir or Path(tempfile.gettempdir()) / "fhir-adapter-audit"
        self.flush_seconds = flush_seconds
        self.replay_seconds = replay_seconds
        self.clock = clock
        self._current: _Segment | None = None
        self._sealed: list[_Segment] = []  # switched away from, not yet in the store
        self._lock = asyncio.Lock()
        self._last_replay = 0.0

    def record(self, record: AuditRecord) -> None:
        """Spool one event for the next flush."""
        self._spool(audit_event(record))

    def record_staff(self, record: StaffAuditRecord) -> None:
        """Spool one event of the review workspace (a staff member as the agent)."""
        self._spool(staff_audit_event(record))

    def _spool(self, event: dict[str, Any]) -> None:
        event = {**event, "id": str(uuid.uuid4())}  # stable: a replay finds it stored
        segment = self._current or self._open_segment()
        os.write(segment.fd, orjson.dumps(event) + b"\n")
        segment.events.append(event)

    def _open_segment(self) -> _Segment:
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{SEGMENT_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}"
        path = self.spool_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: no one else can hold it
        self._current = _Segment(path, fd)
        return self._current

    async def run(self, stop: asyncio.Event) -> None:
        """Replay what dead processes left, then flush every `flush_seconds` until `stop`, then
        once more (the app's lifespan runs it)."""
        with contextlib.suppress(Exception):  # logged by replay; tried again later
            await self.replay()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.flush_seconds)
            try:
                await self.flush()
                if time.monotonic() - self._last_replay >= self.replay_seconds:
                    await self.replay()
            except Exception:  # logged; the events wait in the spool for the next round
                await asyncio.sleep(self.flush_seconds)

    async def flush(self) -> int:
        """Write every spooled event of this process now; returns how many were written."""
        async with self._lock:
            if self._current is not None and self._current.events:
                self._sealed.append(self._current)
                self._current = None  # new events go to a new segment meanwhile
            written = 0
            while self._sealed:
                segment = self._sealed[0]
                # Issue #18: a segment's first flush skips asking which of its events are
                # stored (its ids are new, and only this process has seen them); after a failed
                # flush some batches may have committed, so a retry asks.
                check, segment.attempted = segment.attempted, True
                try:
                    written += await self._store(segment, check=check)
                except Exception as exc:
                    log.error(
                        "audit flush failed (%s); %d events kept in the spool",
                        type(exc).__name__,
                        sum(len(s.events) for s in self._sealed),
                    )
                    raise
                self._sealed.pop(0)
                segment.discard()
            return written

    async def _store(self, segment: _Segment, *, check: bool) -> int:
        """Store a segment's events: through the writer process when there is one (it reads
        them from the segment's file, which this process keeps locked meanwhile), else here."""
        if self.writer is not None:
            return await self.writer.store_segment(segment.path, check=check)
        return await store_events(self.store, segment.events, check=check, clock=self.clock)

    async def replay(self) -> int:
        """Store the events of spool segments no live process holds; returns how many were new."""
        self._last_replay = time.monotonic()
        if not self.spool_dir.is_dir():
            return 0
        written = 0
        for path in sorted(self.spool_dir.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
            segment = _claim(path)
            if segment is None:
                continue
            try:
                if self.writer is None:
                    segment.events = read_events(segment.path)
                stored = await self._store(segment, check=True)
                written += stored
            except Exception as exc:
                os.close(segment.fd)  # unlocked again: the next replay tries it
                log.error("audit replay of a spool segment failed (%s)", type(exc).__name__)
                raise
            segment.discard()
            log.info("audit: replayed a spool segment of a stopped process (%d new events)", stored)
        return written

    async def close(self) -> None:
        await self.flush()
        if self._current is not None and not self._current.events:
            self._current.discard()
            self._current = None
        if self.writer is not None:
            self.writer.close()


async def store_events(
    store: ResourceStore, events: list[dict[str, Any]], *, check: bool, clock: Clock = utc_now
) -> int:
    """Insert the events not stored yet, a transaction per batch; returns how many were new.
    Without `check`, the caller knows none of them is stored.

    Only the process that holds the segment the events come from stores them, so nobody else
    can insert them between the check and the insert."""
    written = 0
    for start in range(0, len(events), STORE_BATCH):
        batch = events[start : start + STORE_BATCH]
        async with store.transaction() as tx:
            new = batch
            if check:
                stored = await tx.resources.existing(("AuditEvent", e["id"]) for e in batch)
                new = [e for e in batch if ("AuditEvent", e["id"]) not in stored]
            now = clock()
            for event in new:
                await tx.resources.insert(with_meta(event, event["id"], 1, now), now=now)
        written += len(new)
    return written


def _claim(path: Path) -> _Segment | None:
    """The segment locked for this process, or None when a live process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # its owner stored and deleted it while we opened it
        os.close(fd)
        return None
    return _Segment(path, fd)


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    torn = 0
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            torn += 1  # a write cut short by the crash: nothing a client was answered after
            continue
        if (
            isinstance(event, dict)
            and event.get("resourceType") == "AuditEvent"
            and event.get("id")
        ):
            events.append(event)
    if torn:
        log.warning("audit replay: %d unreadable line(s) skipped", torn)
    return events
