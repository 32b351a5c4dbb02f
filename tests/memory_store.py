"""MemoryStore: an in-memory fake of the resource store (ports.store), for fast service tests.

It keeps the SQL store's contract (tests/store/test_store_contract.py runs against both): a write
transaction works on a copy of the state and commits it whole or not at all; writers queue one at
a time; reads see the state as their transaction began. Contents are kept as JSON, so a caller
that changes a dict it read or wrote changes nothing stored. Search is tests/memory_search.py.

What it does not do: several processes, PostgreSQL's row locks (`read_for_update` and `lock` are
plain here, writers being serialized anyway), and search parameter types beyond token,
reference, date, string, `_id` and `_lastUpdated` (NotImplementedError).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from fhir_adapter.errors import ConflictError
from fhir_adapter.fhir.search import SearchQuery
from fhir_adapter.fhir.search_index import IndexRows, index_rows
from fhir_adapter.ports.store import (
    RENDER,
    ClientRecord,
    OutboxItem,
    SearchPage,
    SigningKey,
    StoredResource,
    SubscriptionEvent,
    WorkflowJob,
)
from tests.memory_search import Row, page_keys

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Version:
    version_id: int
    last_updated: datetime
    content: bytes  # JSON


@dataclass(frozen=True, slots=True)
class _Job:
    job: WorkflowJob
    leased_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Delivery:
    item: OutboxItem
    leased_until: datetime | None = None


@dataclass(slots=True)
class _State:
    """Everything stored. A write transaction copies the containers (never the values, which are
    immutable) and the store takes the copy on commit."""

    next_pk: int = 1
    pks: dict[Key, int] = field(default_factory=dict)
    versions: dict[Key, tuple[_Version, ...]] = field(default_factory=dict)
    index: dict[Key, IndexRows] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    outbox: dict[str, _Delivery] = field(default_factory=dict)
    events: dict[str, tuple[SubscriptionEvent, ...]] = field(default_factory=dict)
    keys: list[tuple[datetime, SigningKey]] = field(default_factory=list)
    clients: dict[str, tuple[datetime, ClientRecord]] = field(default_factory=dict)
    assertions: dict[tuple[str, str], datetime] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(
            self.next_pk,
            dict(self.pks),
            dict(self.versions),
            dict(self.index),
            dict(self.jobs),
            dict(self.outbox),
            dict(self.events),
            list(self.keys),
            dict(self.clients),
            dict(self.assertions),
        )


class MemoryStore:
    """Implements ports.store.ResourceStore in memory."""

    def __init__(self, *, base_url: str | None = None) -> None:
        self.base_url = base_url
        self.state = _State()
        self._writers = asyncio.Lock()
        self.work_queued = asyncio.Event()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[MemoryTransaction]:
        if not write:
            yield MemoryTransaction(self.state, base_url=self.base_url, read_only=True)
            return
        async with self._writers:
            tx = MemoryTransaction(self.state.copy(), base_url=self.base_url)
            before = set(self.state.outbox)
            yield tx
            self.state = tx.state  # reached only when the block did not raise
            if tx.state.outbox.keys() != before:
                self.work_queued.set()

    async def close(self) -> None:
        return None


class _Part:
    def __init__(self, tx: MemoryTransaction) -> None:
        self._tx = tx

    @property
    def _state(self) -> _State:
        return self._tx.state

    def _write(self) -> _State:
        if self._tx.read_only:
            raise RuntimeError("a read-only transaction cannot write")
        return self._tx.state


class MemoryTransaction:
    """Implements ports.store.StoreTransaction on one state (a copy, for a write)."""

    def __init__(self, state: _State, *, base_url: str | None, read_only: bool = False) -> None:
        self.state = state
        self.base_url = base_url
        self.read_only = read_only
        self.resources = MemoryResources(self)
        self.jobs = MemoryJobs(self)
        self.outbox = MemoryOutbox(self)
        self.events = MemoryEvents(self)
        self.auth = MemoryAuth(self)


def _stored(key: Key, version: _Version) -> StoredResource:
    return StoredResource(
        key[0], key[1], version.version_id, version.last_updated, orjson.loads(version.content)
    )


class MemoryResources(_Part):
    """Implements ports.store.ResourceRows."""

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        versions = self._state.versions.get((resource_type, id))
        return _stored((resource_type, id), versions[-1]) if versions else None

    async def read_for_update(self, resource_type: str, id: str) -> StoredResource | None:
        return await self.read(resource_type, id)

    async def read_many(self, keys: Iterable[Key]) -> dict[str, StoredResource]:
        found = [await self.read(*key) for key in dict.fromkeys(keys)]
        return {f.key: f for f in found if f is not None}

    async def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource | None:
        for version in self._state.versions.get((resource_type, id), ()):
            if version.version_id == version_id:
                return _stored((resource_type, id), version)
        return None

    async def history(self, resource_type: str, id: str) -> list[StoredResource]:
        versions = self._state.versions.get((resource_type, id), ())
        return [_stored((resource_type, id), v) for v in reversed(versions)]

    async def exists(self, resource_type: str, id: str) -> bool:
        return (resource_type, id) in self._state.pks

    async def existing(self, keys: Iterable[Key]) -> set[Key]:
        return {key for key in keys if key in self._state.pks}

    async def insert(self, content: dict[str, Any], *, now: datetime) -> StoredResource:
        state = self._write()
        now = now.astimezone(UTC)  # as the databases keep it: the instant, in UTC
        key = (content["resourceType"], content["id"])
        if key in state.pks:
            raise ConflictError(f"{key[0]}/{key[1]} already exists")
        state.pks[key] = state.next_pk
        state.next_pk += 1
        self._put(state, key, (), _Version(1, now, orjson.dumps(content)), content)
        return StoredResource(key[0], key[1], 1, now, content)

    async def replace(
        self, current: StoredResource, content: dict[str, Any], *, now: datetime
    ) -> StoredResource:
        state = self._write()
        now = now.astimezone(UTC)
        key = (current.resource_type, current.id)
        versions = state.versions.get(key, ())
        if not versions or versions[-1].version_id != current.version_id:
            raise ConflictError(f"{current.key} was changed concurrently; read it again and retry")
        version = current.version_id + 1
        self._put(state, key, versions, _Version(version, now, orjson.dumps(content)), content)
        return StoredResource(key[0], key[1], version, now, content)

    def _put(
        self,
        state: _State,
        key: Key,
        versions: tuple[_Version, ...],
        version: _Version,
        content: dict[str, Any],
    ) -> None:
        state.versions[key] = (*versions, version)
        state.index[key] = index_rows(content, base_url=self._tx.base_url)

    async def search(self, query: SearchQuery) -> SearchPage:
        state = self._state
        rows = (
            Row(pk, key[0], key[1], state.versions[key][-1].last_updated, state.index[key])
            for key, pk in state.pks.items()
            if key[0] == query.resource_type
        )
        page, total, next_cursor, included = page_keys(rows, query)
        matches = [
            _stored((r.resource_type, r.id), state.versions[(r.resource_type, r.id)][-1])
            for r in page
        ]
        extra = [_stored(key, state.versions[key][-1]) for key in included if key in state.versions]
        return SearchPage(matches, extra, total, next_cursor)

    async def lock(self, *keys: str) -> bool:
        return False  # writers are serialized already

    async def matches(
        self, queries: Sequence[SearchQuery], *, known: Iterable[tuple[str, str]] = ()
    ) -> list[list[StoredResource]]:
        return [(await self.search(query)).matches for query in queries]

    async def flush(self) -> None:
        return None

    def pending(self) -> bool:
        return False


def _free(leased_until: datetime | None, now: datetime) -> bool:
    return leased_until is None or leased_until < now


class MemoryJobs(_Part):
    """Implements ports.store.JobQueue."""

    async def add(self, task_id: str, *, due_at: datetime, first_attempt_at: datetime) -> None:
        state = self._write()
        if task_id not in state.jobs:
            state.jobs[task_id] = _Job(
                WorkflowJob(task_id, "evaluate", due_at, first_attempt_at, 0)
            )

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, overdue: bool = False
    ) -> list[WorkflowJob]:
        state = self._write()
        if overdue:
            wanted = [
                r for r in state.jobs.values() if r.job.state != "done" and r.job.due_at <= now
            ]
            wanted.sort(key=lambda r: r.job.due_at)
        else:
            wanted = [
                r
                for r in state.jobs.values()
                if r.job.state == "evaluate" and r.job.next_attempt_at <= now
            ]
            wanted.sort(key=lambda r: r.job.next_attempt_at)
        leased = []
        for row in [r for r in wanted if _free(r.leased_until, now)][:limit]:
            job = dataclasses.replace(row.job, attempts=row.job.attempts + 1)
            state.jobs[job.task_id] = _Job(job, lease_until)
            leased.append(job)
        return leased

    async def get(self, task_id: str) -> WorkflowJob | None:
        row = self._state.jobs.get(task_id)
        return row.job if row else None

    async def undecided(self, *, due_before: datetime, limit: int) -> list[WorkflowJob]:
        jobs = [r.job for r in self._state.jobs.values()]
        wanted = [j for j in jobs if j.state != "done" and j.due_at <= due_before]
        return sorted(wanted, key=lambda j: (j.due_at, j.task_id))[:limit]

    async def set(
        self,
        task_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        due_at: datetime | None = None,
    ) -> None:
        stored = self._write()
        row = stored.jobs.get(task_id)
        if row is None:
            return
        job = dataclasses.replace(
            row.job,
            state=state,
            next_attempt_at=next_attempt_at or row.job.next_attempt_at,
            due_at=due_at or row.job.due_at,
        )
        stored.jobs[task_id] = _Job(job, None)


class MemoryOutbox(_Part):
    """Implements ports.store.Outbox."""

    async def add(self, item: OutboxItem) -> None:
        state = self._write()
        if item.id in state.outbox:
            raise ConflictError(f"outbox item {item.id} already exists")
        state.outbox[item.id] = _Delivery(
            dataclasses.replace(item, delivered_at=None, last_error=None)
        )

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, render: bool = False
    ) -> list[OutboxItem]:
        state = self._write()
        due = [
            r
            for r in state.outbox.values()
            if r.item.state == "pending"
            and r.item.next_attempt_at <= now
            and _free(r.leased_until, now)
            and (r.item.destination == RENDER) == render
        ]
        due.sort(key=lambda r: r.item.next_attempt_at)
        leased = []
        for row in due[:limit]:
            item = dataclasses.replace(row.item, attempts=row.item.attempts + 1)
            state.outbox[item.id] = _Delivery(item, lease_until)
            leased.append(item)
        return leased

    async def set(
        self,
        item_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        delivered_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        stored = self._write()
        row = stored.outbox.get(item_id)
        if row is None:
            return
        item = dataclasses.replace(
            row.item,
            state=state,
            last_error=error,
            next_attempt_at=next_attempt_at or row.item.next_attempt_at,
            delivered_at=delivered_at or row.item.delivered_at,
        )
        stored.outbox[item_id] = _Delivery(item, None)

    async def withdraw(self, communication_ids: Iterable[str], *, now: datetime) -> list[str]:
        state = self._write()
        ids = set(communication_ids)
        withdrawn = set()
        for row in list(state.outbox.values()):
            item = row.item
            if (
                item.communication_id in ids
                and item.state == "pending"
                and _free(row.leased_until, now)
            ):
                state.outbox[item.id] = _Delivery(
                    dataclasses.replace(
                        item, state="withdrawn", last_error="withdrawn: request cancelled"
                    )
                )
                withdrawn.add(item.communication_id)
        return sorted(withdrawn)

    async def items(self, *, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        rows = [r.item for r in self._state.outbox.values() if not state or r.item.state == state]
        return sorted(rows, key=lambda item: item.created_at)[:limit]

    async def retry(self, *, now: datetime, ids: Iterable[str] | None = None) -> int:
        state = self._write()
        wanted = None if ids is None else set(ids)
        count = 0
        for row in list(state.outbox.values()):
            item = row.item
            if item.state == "failed" and (wanted is None or item.id in wanted):
                state.outbox[item.id] = _Delivery(
                    dataclasses.replace(item, state="pending", attempts=0, next_attempt_at=now)
                )
                count += 1
        return count


class MemoryEvents(_Part):
    """Implements ports.store.EventLog."""

    async def add(self, subscription_id: str, focus: str, *, now: datetime) -> int:
        state = self._write()
        events = state.events.get(subscription_id, ())
        number = len(events) + 1
        state.events[subscription_id] = (
            *events,
            SubscriptionEvent(subscription_id, number, focus, now),
        )
        return number

    async def read(
        self, subscription_id: str, *, since: int = 1, until: int | None = None
    ) -> list[SubscriptionEvent]:
        events = self._state.events.get(subscription_id, ())
        wanted = [
            e
            for e in events
            if e.event_number >= since and (until is None or e.event_number <= until)
        ]
        return wanted[:1000]

    async def count(self, subscription_id: str) -> int:
        return len(self._state.events.get(subscription_id, ()))

    async def last_sent(self, subscription_id: str) -> datetime | None:
        sent = [
            r.item.created_at
            for r in self._state.outbox.values()
            if r.item.subscription_id == subscription_id
        ]
        return max(sent, default=None)


class MemoryAuth(_Part):
    """Implements ports.store.AuthRecords."""

    async def signing_key(self) -> SigningKey | None:
        keys = self._state.keys
        return max(keys, key=lambda k: k[0])[1] if keys else None

    async def add_signing_key(self, key: SigningKey, *, now: datetime) -> None:
        state = self._write()
        if any(k.kid == key.kid for _, k in state.keys):
            raise ConflictError(f"signing key {key.kid} already exists")
        state.keys.append((now, key))

    async def get_client(self, client_id: str) -> ClientRecord | None:
        found = self._state.clients.get(client_id)
        return found[1] if found else None

    async def list_clients(self) -> list[ClientRecord]:
        return [c for _, c in sorted(self._state.clients.values(), key=lambda c: c[0])]

    async def add_client(self, client: ClientRecord, *, now: datetime) -> None:
        state = self._write()
        if client.client_id in state.clients:
            raise ConflictError(f"client {client.client_id} already exists")
        state.clients[client.client_id] = (now, client)

    async def remove_client(self, client_id: str) -> bool:
        return self._write().clients.pop(client_id, None) is not None

    async def use_assertion(
        self, client_id: str, jti: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        state = self._write()
        for used, expires in list(state.assertions.items()):
            if expires < now:
                del state.assertions[used]
        if (client_id, jti) in state.assertions:
            return False
        state.assertions[(client_id, jti)] = expires_at
        return True
