"""The store port: stored value types and a transaction made of narrow parts.

A transaction exposes one part per concern: `tx.resources` (FHIR resources, versions, search),
`tx.jobs` (the workflow's background jobs), `tx.outbox` (deliveries owed), `tx.events`
(Subscription events) and `tx.auth` (the built-in authorization server's keys and clients).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from fhir_adapter.fhir.search import SearchCursor, SearchQuery

_set = object.__setattr__


class StoredResource:
    """One stored version of a resource; `content` already carries id and meta.

    A version read from the store keeps the JSON text it was stored as (`json`) and decodes it
    only when `content` is first asked for: an answer that only passes stored resources on is
    spliced from that text, never decoded and encoded again (issue #18: a page of 50 spent a
    fifth of its CPU doing so). Immutable, like the stored version it stands for.
    """

    __slots__ = ("_content", "id", "json", "last_updated", "resource_type", "version_id")

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    json: str | None  # the stored JSON text of `content`, when read from the store
    _content: dict[str, Any] | None

    def __init__(
        self,
        resource_type: str,
        id: str,
        version_id: int,
        last_updated: datetime,
        content: dict[str, Any] | None = None,
        *,
        json: str | None = None,
    ) -> None:
        if (content is None) == (json is None):
            raise TypeError("a StoredResource holds its content or its stored JSON, one of them")
        # Set through object's own __setattr__ (this class refuses assignment): as a frozen
        # dataclass's __init__ does, one call each (a page of 50 makes 50 of these).
        _set(self, "resource_type", resource_type)
        _set(self, "id", id)
        _set(self, "version_id", version_id)
        _set(self, "last_updated", last_updated)
        _set(self, "json", json)
        _set(self, "_content", content)

    @property
    def content(self) -> dict[str, Any]:
        content = self._content
        if content is None:
            content = orjson.loads(self.json)  # type: ignore[arg-type]
            _set(self, "_content", content)
        return content

    def with_content(self, content: dict[str, Any]) -> StoredResource:
        """This version as shown with other content (a Subscription without its headers)."""
        return StoredResource(
            self.resource_type, self.id, self.version_id, self.last_updated, content
        )

    @property
    def key(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"StoredResource is immutable; cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredResource):
            return NotImplemented
        return (
            self.resource_type,
            self.id,
            self.version_id,
            self.last_updated,
            self.content,
        ) == (other.resource_type, other.id, other.version_id, other.last_updated, other.content)

    __hash__ = None  # type: ignore[assignment]  # content is a dict, as with the dataclass

    def __repr__(self) -> str:
        return (
            f"StoredResource({self.resource_type!r}, {self.id!r}, {self.version_id!r}, "
            f"{self.last_updated!r})"
        )


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of matches, the resources `_include` pulled in, and where the next page starts."""

    matches: list[StoredResource]
    included: list[StoredResource]
    total: int  # -1 when the query asked for no total
    next_cursor: SearchCursor | None
    total_estimated: bool = False  # issue #13: `total` is the database's estimate


@dataclass(frozen=True, slots=True)
class WorkflowJob:
    """The background work owed to one second-opinion Task."""

    task_id: str
    state: str  # evaluate | review | done
    due_at: datetime
    next_attempt_at: datetime
    attempts: int


RENDER = "render"  # the outbox destination of a notice still to be rendered


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A delivery owed: one Communication to one destination; or (destination `render`) a
    notice's letter still to be rendered into its Communication."""

    id: str
    communication_id: str
    destination: str  # provider-endpoint | member-notice-url | subscription | render
    state: str  # pending | delivered (a render job: rendered) | failed | withdrawn
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None
    subscription_id: str | None = None  # destination "subscription": the event to notify
    event_number: int | None = None
    payload: dict[str, Any] | None = None  # render: the letter (NoticeContext) and where it goes

    @classmethod
    def owed(
        cls,
        communication_id: str,
        destination: str,
        now: datetime,
        payload: dict[str, Any] | None = None,
    ) -> OutboxItem:
        """A new item, due now."""
        return cls(
            str(uuid.uuid4()),
            communication_id,
            destination,
            "pending",
            0,
            now,
            now,
            payload=payload,
        )


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    subscription_id: str
    event_number: int
    focus: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The built-in authorization server's token signing key (PEM, PKCS#8)."""

    kid: str
    algorithm: str
    private_pem: str


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A system registered with the built-in authorization server (`fhir-adapter clients add`)."""

    client_id: str
    name: str
    jwks: dict[str, Any]  # its public keys, for its client assertions
    scope: str  # the most its tokens may carry
    patient: str | None = None  # a member-facing client's patient (tokens carry `patient`)


class ResourceRows(Protocol):
    """FHIR resources, their versions and their search index (`tx.resources`)."""

    async def read(self, resource_type: str, id: str) -> StoredResource | None: ...

    async def read_for_update(self, resource_type: str, id: str) -> StoredResource | None:
        """Like `read`, but holds a row lock until the transaction ends."""
        ...

    async def read_many(self, keys: Iterable[tuple[str, str]]) -> dict[str, StoredResource]:
        """The current versions of the `(type, id)` keys that exist, by `Type/id`, in one query."""
        ...

    async def vread(
        self, resource_type: str, id: str, version_id: int
    ) -> StoredResource | None: ...

    async def history(self, resource_type: str, id: str) -> list[StoredResource]: ...

    async def exists(self, resource_type: str, id: str) -> bool: ...

    async def existing(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the `(type, id)` keys are stored, in one query."""
        ...

    async def insert(self, content: dict[str, Any], *, now: datetime) -> StoredResource:
        """Store version 1 of a new resource; `content` must carry resourceType and id."""
        ...

    async def replace(
        self, current: StoredResource, content: dict[str, Any], *, now: datetime
    ) -> StoredResource:
        """Store the next version of `current` (which must have been read for update)."""
        ...

    async def search(self, query: SearchQuery) -> SearchPage: ...

    async def lock(self, *keys: str) -> bool:
        """Serialize writers that share a key (e.g. a conditional create) until commit. True
        when a lock was taken (a search after it sees what its last holder committed); False
        where writers are serialized anyway, so a search before it was as good."""
        ...

    async def matches(
        self, queries: Sequence[SearchQuery], *, known: Iterable[tuple[str, str]] = ()
    ) -> list[list[StoredResource]]:
        """The first `count` matches of each query (its filters only), in one round trip; it
        may also find which `known` keys exist, so that `existing` need not ask for them."""
        ...

    async def flush(self) -> None:
        """Write what waits in memory (queued inserts, versions, index rows) now."""
        ...

    def pending(self) -> bool:
        """Whether writes wait to be flushed."""
        ...


class JobQueue(Protocol):
    """The background work owed to second-opinion Tasks (`tx.jobs`)."""

    async def add(self, task_id: str, *, due_at: datetime, first_attempt_at: datetime) -> None:
        """Owe the Task an evaluation, which no worker tries before `first_attempt_at`; a Task
        already owed one keeps its row."""
        ...

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, overdue: bool = False
    ) -> list[WorkflowJob]:
        """Lease up to `limit` jobs no other worker holds: those due for an attempt, or (`overdue`)
        those whose decision deadline has passed undecided."""
        ...

    async def get(self, task_id: str) -> WorkflowJob | None: ...

    async def undecided(self, *, due_before: datetime, limit: int) -> list[WorkflowJob]:
        """Jobs of requests not yet decided and due by `due_before`, soonest first (the
        early-warning sweep)."""
        ...

    async def set(
        self,
        task_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        due_at: datetime | None = None,
    ) -> None:
        """Record what became of a job and release its lease; `due_at` moves its deadline
        (an extended decision time frame)."""
        ...


class Outbox(Protocol):
    """Deliveries owed, leased to one worker at a time (`tx.outbox`)."""

    async def add(self, item: OutboxItem) -> None:
        """Owe a delivery; written with the Communication it delivers, in this transaction."""
        ...

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, render: bool = False
    ) -> list[OutboxItem]:
        """Lease pending deliveries (with `render`: render jobs) that are due and that no other
        worker holds."""
        ...

    async def set(
        self,
        item_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        delivered_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        """Record what became of a delivery and release its lease."""
        ...

    async def withdraw(self, communication_ids: Iterable[str], *, now: datetime) -> list[str]:
        """Withdraw the pending deliveries (not leased by a worker now) of these Communications;
        the ids of the Communications whose delivery was withdrawn."""
        ...

    async def items(self, *, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        """Deliveries (of one state, or all), oldest first."""
        ...

    async def retry(self, *, now: datetime, ids: Iterable[str] | None = None) -> int:
        """Put failed deliveries (all, or the given ones) back in the queue; returns how many."""
        ...


class EventLog(Protocol):
    """Numbered Subscription events (`tx.events`)."""

    async def add(self, subscription_id: str, focus: str, *, now: datetime) -> int:
        """Record an event for the Subscription (held for update by the caller); its number."""
        ...

    async def read(
        self, subscription_id: str, *, since: int = 1, until: int | None = None
    ) -> list[SubscriptionEvent]:
        """The Subscription's events numbered `since` to `until`, in order (at most 1,000)."""
        ...

    async def count(self, subscription_id: str) -> int:
        """How many events the Subscription has had (the number of the latest)."""
        ...

    async def last_sent(self, subscription_id: str) -> datetime | None:
        """When the latest notification (event or heartbeat) for the Subscription was queued."""
        ...


class AuthRecords(Protocol):
    """The built-in authorization server's signing keys, clients and used assertions
    (`tx.auth`)."""

    async def signing_key(self) -> SigningKey | None:
        """The newest token signing key, if one was made."""
        ...

    async def add_signing_key(self, key: SigningKey, *, now: datetime) -> None: ...

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def list_clients(self) -> list[ClientRecord]: ...

    async def add_client(self, client: ClientRecord, *, now: datetime) -> None: ...

    async def remove_client(self, client_id: str) -> bool:
        """Unregister a client (issue #16: its tokens are refused from then on); False if unknown."""
        ...

    async def use_assertion(
        self, client_id: str, jti: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        """Record a client assertion's `jti`; False if it was used before (a replay)."""
        ...


class StoreTransaction(Protocol):
    """Reads and writes inside one database transaction: all of it commits, or none of it."""

    @property
    def resources(self) -> ResourceRows: ...

    @property
    def jobs(self) -> JobQueue: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def auth(self) -> AuthRecords: ...


class ResourceStore(Protocol):
    """Opens transactions on the resource database."""

    # Set when a write transaction that added outbox work commits: the worker wakes on it
    # rather than waiting out its poll interval (issue #13: notices rendered right after).
    work_queued: asyncio.Event

    def transaction(
        self, *, write: bool = True
    ) -> AbstractAsyncContextManager[StoreTransaction]: ...

    async def close(self) -> None: ...
