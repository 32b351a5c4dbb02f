"""SqlResourceStore: the resource store on SQLAlchemy 2 (async), SQLite or PostgreSQL by URL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fhir_adapter.errors import ConflictError
from fhir_adapter.fhir.search import (
    DateCriterion,
    Filter,
    ReferenceCriterion,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
    index_rows,
)
from fhir_adapter.ports import (
    ClientRecord,
    OutboxItem,
    SearchPage,
    SigningKey,
    StoredResource,
    SubscriptionEvent,
    WorkflowJob,
)
from fhir_adapter.store.tables import (
    INDEX_TABLES,
    auth_clients,
    auth_keys,
    auth_used_assertions,
    outbox,
    resource_versions,
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
    subscription_events,
    workflow_jobs,
)

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL, a busy timeout and real transactions."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            json_serializer=_dumps,
            json_deserializer=orjson.loads,
        )
        _make_sqlite_transactional(engine)
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,  # SQL errors must never carry patient data into logs
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        pool_size=10,
        max_overflow=10,
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection unused this long is pinged before it is handed out (issue #18). SQLAlchemy's
# `pool_pre_ping` pings at every checkout: a round trip as long as the read it precedes. A busy
# pool's connections are seconds old at most; a connection a restarted or failed-over server
# dropped while idle is found here, and one dropped under load fails its statement, after which
# SQLAlchemy discards the whole pool.
IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:  # the pool drops it and checks out another
            raise DisconnectionError("an idle pooled connection no longer answers")


def _make_sqlite_transactional(engine: AsyncEngine) -> None:
    """Take over BEGIN from the sqlite3 driver so transactions are real and writers queue up.

    Writers open with BEGIN IMMEDIATE: they wait (busy_timeout) instead of failing when another
    writer holds the database. Readers use a deferred BEGIN and never block under WAL.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("fhir_write", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


class SqlResourceStore:
    """Implements ports.ResourceStore on an AsyncEngine."""

    def __init__(self, engine: AsyncEngine, *, base_url: str | None = None) -> None:
        self.engine = engine
        self.base_url = base_url
        # SQLite takes one writer at a time. Queue this process's writers here, in order, rather
        # than in SQLite's busy handler, whose growing sleeps turn a queue into long stalls.
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._autocommit_reads = engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[SqlTransaction]:
        if write and self._writers is not None:
            async with self._writers, self._transaction(write) as tx:
                yield tx
        else:
            async with self._transaction(write) as tx:
                yield tx

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[SqlTransaction]:
        async with self.engine.connect() as conn:
            if not write and self._autocommit_reads:
                # Issue #18: under PostgreSQL's READ COMMITTED each statement sees its own
                # snapshot, in a transaction or not; BEGIN and COMMIT would only add two round
                # trips to a read.
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT", fhir_write=False)
                tx = SqlTransaction(conn, base_url=self.base_url, read_only=True)
                yield tx
                if tx.pending():
                    raise RuntimeError("a read-only transaction cannot write")
                return
            conn = await conn.execution_options(fhir_write=write)
            async with conn.begin():
                tx = SqlTransaction(conn, base_url=self.base_url)
                yield tx
                await tx.flush()

    async def close(self) -> None:
        await self.engine.dispose()


class SqlTransaction:
    """Implements ports.StoreTransaction on one connection inside one transaction."""

    def __init__(
        self, conn: AsyncConnection, *, base_url: str | None, read_only: bool = False
    ) -> None:
        self.conn = conn
        self.read_only = read_only  # each statement on its own: nothing here may write
        self.base_url = base_url
        self.is_postgres = conn.dialect.name == "postgresql"
        # Version and index rows are written in one batch per table when the transaction ends
        # (or before a search needs them): a few statements for a whole Bundle, not a few per entry.
        self._versions: list[dict[str, Any]] = []
        self._index: dict[Any, list[dict[str, Any]]] = {table: [] for table in INDEX_TABLES}
        self._stale: set[int] = set()  # resources whose written index rows are outdated
        self._unflushed: set[int] = set()  # resources created here whose rows are all queued
        # Resources this transaction has seen exist (read, written, checked). Resources are never
        # deleted, so reference checks need not ask again.
        self._known: set[tuple[str, str]] = set()
        # New resources wait here and go in with one INSERT when the next statement runs.
        self._inserts: list[dict[str, Any]] = []

    async def _execute(self, statement: Any, parameters: Any = None) -> Any:
        """Run a statement, after the queued inserts (which it may read or reference)."""
        if self.read_only and not getattr(statement, "is_select", False):
            raise RuntimeError("a read-only transaction cannot write")
        if self._inserts:
            await self._insert_queued()
        return await self.conn.execute(statement, parameters)

    def pending(self) -> bool:
        """Whether writes wait to be flushed."""
        return bool(self._inserts or self._versions or self._stale or any(self._index.values()))

    async def _insert_queued(self) -> None:
        rows, self._inserts = self._inserts, []
        try:
            result = await self.conn.execute(_INSERT_RESOURCES, rows)
        except IntegrityError as exc:  # a failed insert fails the whole transaction
            keys = [f"{row['resource_type']}/{row['id']}" for row in rows]
            what = keys[0] if len(keys) == 1 else f"one of {', '.join(keys)}"
            raise ConflictError(f"{what} already exists") from exc
        pks = {(r.resource_type, r.id): r.pk for r in result}
        for row in rows:
            pk = pks[(row["resource_type"], row["id"])]
            await self._write_version(pk, 1, row["last_updated"], "create", row["content"])
            await self._write_index(pk, row["content"])
            self._unflushed.add(pk)

    async def flush(self) -> None:
        """Write the queued resources, then their version and index rows."""
        if self._inserts:
            await self._insert_queued()
        if self._stale:
            stale = list(self._stale)
            for table in INDEX_TABLES:
                await self._execute(_DELETE_INDEX[table], {"pks": stale})
            self._stale.clear()
        self._unflushed.clear()
        if self._versions:
            await self._execute(_INSERT_ROWS[resource_versions], self._versions)
            self._versions = []
        for table, rows in self._index.items():
            if rows:
                await self._execute(_INSERT_ROWS[table], rows)
                self._index[table] = []

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        row = (await self._execute(_CURRENT, {"p_type": resource_type, "p_id": id})).first()
        return self._seen(_stored(resource_type, row)) if row else None

    async def read_for_update(self, resource_type: str, id: str) -> StoredResource | None:
        statement = _CURRENT_FOR_UPDATE if self.is_postgres else _CURRENT
        row = (await self._execute(statement, {"p_type": resource_type, "p_id": id})).first()
        return self._seen(_stored(resource_type, row)) if row else None

    async def existing(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        requested = list(dict.fromkeys(keys))
        known = {key for key in requested if key in self._known}
        wanted = [key for key in requested if key not in known]
        if not wanted:
            return known
        found = {
            (row.resource_type, row.id) for row in await self._execute(_EXISTING, {"keys": wanted})
        }
        self._known |= found
        return known | found

    def _seen(self, stored: StoredResource) -> StoredResource:
        self._known.add((stored.resource_type, stored.id))
        return stored

    async def exists(self, resource_type: str, id: str) -> bool:
        statement = select(resources.c.pk).where(
            resources.c.resource_type == resource_type, resources.c.id == id
        )
        return (await self._execute(statement)).first() is not None

    async def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource | None:
        await self.flush()
        statement = (
            select(
                resources.c.id,
                resource_versions.c.version_id,
                resource_versions.c.last_updated,
                resource_versions.c.content,
            )
            .join(resources, resources.c.pk == resource_versions.c.resource_pk)
            .where(
                resources.c.resource_type == resource_type,
                resources.c.id == id,
                resource_versions.c.version_id == version_id,
            )
        )
        row = (await self._execute(statement)).first()
        return _stored(resource_type, row) if row else None

    async def read_many(self, keys: Iterable[tuple[str, str]]) -> dict[str, StoredResource]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        statement = _READ_MANY
        found = [
            self._seen(
                StoredResource(r.resource_type, r.id, r.version_id, r.last_updated, r.content)
            )
            for r in await self._execute(statement, {"keys": wanted})
        ]
        return {f.key: f for f in found}

    async def history(self, resource_type: str, id: str) -> list[StoredResource]:
        statement = (
            select(
                resources.c.id,
                resource_versions.c.version_id,
                resource_versions.c.last_updated,
                resource_versions.c.content,
            )
            .join(resources, resources.c.pk == resource_versions.c.resource_pk)
            .where(resources.c.resource_type == resource_type, resources.c.id == id)
            .order_by(resource_versions.c.version_id.desc())
        )
        await self.flush()
        return [_stored(resource_type, row) for row in await self._execute(statement)]

    # -- writes --------------------------------------------------------------------------------

    async def insert(self, content: dict[str, Any], *, now: datetime) -> StoredResource:
        resource_type, id = content["resourceType"], content["id"]
        self._inserts.append(
            {
                "resource_type": resource_type,
                "id": id,
                "version_id": 1,
                "last_updated": now,
                "content": content,
            }
        )
        return self._seen(StoredResource(resource_type, id, 1, now, content))

    async def replace(
        self, current: StoredResource, content: dict[str, Any], *, now: datetime
    ) -> StoredResource:
        version = current.version_id + 1
        result = await self._execute(
            _UPDATE_RESOURCE,
            {
                "p_type": current.resource_type,
                "p_id": current.id,
                "p_version": current.version_id,
                "p_new_version": version,
                "p_updated": now,
                "p_content": content,
            },
        )
        pk = result.scalar_one_or_none()
        if pk is None:  # someone else wrote a newer version since we read it
            raise ConflictError(f"{current.key} was changed concurrently; read it again and retry")
        await self._write_version(pk, version, now, "update", content)
        for table, rows in self._index.items():  # rows of an older version not written yet
            self._index[table] = [row for row in rows if row["resource_pk"] != pk]
        if pk not in self._unflushed:
            self._stale.add(pk)
        await self._write_index(pk, content)
        return StoredResource(current.resource_type, current.id, version, now, content)

    async def lock(self, key: str) -> None:
        if self.is_postgres:  # SQLite writers are already serialized by BEGIN IMMEDIATE
            digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            await self._execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": digest})

    # -- workflow jobs -------------------------------------------------------------------------

    async def add_job(self, task_id: str, *, due_at: datetime, now: datetime) -> None:
        values = {
            "task_id": task_id,
            "state": "evaluate",
            "due_at": due_at,
            "next_attempt_at": now,
            "attempts": 0,
        }
        # One statement: a Task that has its job already keeps it.
        statement = (
            postgresql_insert(workflow_jobs) if self.is_postgres else sqlite_insert(workflow_jobs)
        )
        await self._execute(
            statement.values(**values).on_conflict_do_nothing(index_elements=["task_id"])
        )

    async def claim_jobs(
        self, *, now: datetime, lease_until: datetime, limit: int, overdue: bool = False
    ) -> list[WorkflowJob]:
        jobs = workflow_jobs.c
        if overdue:
            wanted = and_(jobs.state != "done", jobs.due_at <= now)
            order = jobs.due_at
        else:
            wanted = and_(jobs.state == "evaluate", jobs.next_attempt_at <= now)
            order = jobs.next_attempt_at
        result = await self._lease(
            workflow_jobs,
            jobs.task_id,
            wanted,
            order,
            now=now,
            limit=limit,
            lease_until=lease_until,
            returning=(jobs.task_id, jobs.state, jobs.due_at, jobs.next_attempt_at, jobs.attempts),
        )
        return [
            WorkflowJob(r.task_id, r.state, r.due_at, r.next_attempt_at, r.attempts) for r in result
        ]

    async def get_job(self, task_id: str) -> WorkflowJob | None:
        jobs = workflow_jobs.c
        row = (
            await self._execute(
                select(
                    jobs.task_id, jobs.state, jobs.due_at, jobs.next_attempt_at, jobs.attempts
                ).where(jobs.task_id == task_id)
            )
        ).first()
        return (
            WorkflowJob(row.task_id, row.state, row.due_at, row.next_attempt_at, row.attempts)
            if row
            else None
        )

    async def undecided_jobs(self, *, due_before: datetime, limit: int) -> list[WorkflowJob]:
        jobs = workflow_jobs.c
        rows = await self._execute(
            select(jobs.task_id, jobs.state, jobs.due_at, jobs.next_attempt_at, jobs.attempts)
            .where(jobs.state != "done", jobs.due_at <= due_before)
            .order_by(jobs.due_at, jobs.task_id)
            .limit(limit)
        )
        return [
            WorkflowJob(r.task_id, r.state, r.due_at, r.next_attempt_at, r.attempts) for r in rows
        ]

    # -- outbox --------------------------------------------------------------------------------

    async def add_outbox(self, item: OutboxItem) -> None:
        await self._execute(
            _INSERT_OUTBOX,
            {
                "id": item.id,
                "communication_id": item.communication_id,
                "destination": item.destination,
                "state": item.state,
                "attempts": item.attempts,
                "created_at": item.created_at,
                "next_attempt_at": item.next_attempt_at,
                "subscription_id": item.subscription_id,
                "event_number": item.event_number,
            },
        )

    # -- the built-in authorization server -----------------------------------------------------

    async def signing_key(self) -> SigningKey | None:
        statement = select(auth_keys).order_by(auth_keys.c.created_at.desc()).limit(1)
        row = (await self._execute(statement)).first()
        return SigningKey(row.kid, row.algorithm, row.private_pem) if row else None

    async def add_signing_key(self, key: SigningKey, *, now: datetime) -> None:
        await self._execute(
            insert(auth_keys).values(
                kid=key.kid, algorithm=key.algorithm, private_pem=key.private_pem, created_at=now
            )
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        statement = select(auth_clients).where(auth_clients.c.client_id == client_id)
        row = (await self._execute(statement)).first()
        return _client(row) if row else None

    async def list_clients(self) -> list[ClientRecord]:
        statement = select(auth_clients).order_by(auth_clients.c.created_at)
        return [_client(row) for row in await self._execute(statement)]

    async def add_client(self, client: ClientRecord, *, now: datetime) -> None:
        await self._execute(
            insert(auth_clients).values(
                client_id=client.client_id,
                name=client.name,
                jwks=client.jwks,
                scope=client.scope,
                patient=client.patient,
                created_at=now,
            )
        )

    async def remove_client(self, client_id: str) -> bool:
        result = await self._execute(
            delete(auth_clients).where(auth_clients.c.client_id == client_id)
        )
        return bool(result.rowcount)

    async def use_assertion(
        self, client_id: str, jti: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        await self._execute(
            delete(auth_used_assertions).where(auth_used_assertions.c.expires_at < now)
        )
        try:
            async with self.conn.begin_nested():
                await self._execute(
                    insert(auth_used_assertions).values(
                        client_id=client_id, jti=jti, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True

    async def add_event(self, subscription_id: str, focus: str, *, now: datetime) -> int:
        number = await self.event_count(subscription_id) + 1
        await self._execute(
            insert(subscription_events).values(
                subscription_id=subscription_id, event_number=number, focus=focus, occurred_at=now
            )
        )
        return number

    async def last_sent(self, subscription_id: str) -> datetime | None:
        statement = select(func.max(outbox.c.created_at)).where(
            outbox.c.subscription_id == subscription_id
        )
        value = (await self._execute(statement)).scalar_one_or_none()
        if value is None:
            return None
        stamp: datetime = (
            value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        )
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    async def event_count(self, subscription_id: str) -> int:
        statement = select(func.coalesce(func.max(subscription_events.c.event_number), 0)).where(
            subscription_events.c.subscription_id == subscription_id
        )
        return int((await self._execute(statement)).scalar_one())

    async def events(
        self, subscription_id: str, *, since: int = 1, until: int | None = None
    ) -> list[SubscriptionEvent]:
        c = subscription_events.c
        statement = (
            select(c.subscription_id, c.event_number, c.focus, c.occurred_at)
            .where(c.subscription_id == subscription_id, c.event_number >= since)
            .order_by(c.event_number)
            .limit(1000)
        )
        if until is not None:
            statement = statement.where(c.event_number <= until)
        return [
            SubscriptionEvent(r.subscription_id, r.event_number, r.focus, r.occurred_at)
            for r in await self._execute(statement)
        ]

    async def _lease(
        self,
        table: Table,
        key: Any,
        wanted: ColumnElement[bool],
        order: Any,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        returning: Sequence[Any],
    ) -> Sequence[Any]:
        """Lease up to `limit` wanted rows no worker holds: pick them (skipping rows another worker
        has locked, on PostgreSQL), mark them leased, count the attempt. Returns the leased rows."""
        free = or_(table.c.leased_until.is_(None), table.c.leased_until < now)
        statement = select(key).where(wanted, free).order_by(order).limit(limit)
        if self.is_postgres:  # several workers: each skips what another holds
            statement = statement.with_for_update(skip_locked=True)
        ids = [row[0] for row in await self._execute(statement)]
        if not ids:
            return []
        result = await self._execute(
            update(table)
            .where(key.in_(ids))
            .values(leased_until=lease_until, attempts=table.c.attempts + 1)
            .returning(*returning)
        )
        leased: Sequence[Any] = result.all()
        return leased

    async def claim_outbox(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[OutboxItem]:
        c = outbox.c
        result = await self._lease(
            outbox,
            c.id,
            and_(c.state == "pending", c.next_attempt_at <= now),
            c.next_attempt_at,
            now=now,
            limit=limit,
            lease_until=lease_until,
            returning=_OUTBOX_COLUMNS,
        )
        return [_outbox_item(row) for row in result]

    async def set_outbox(
        self,
        item_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        delivered_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "leased_until": None, "last_error": error}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if delivered_at is not None:
            values["delivered_at"] = delivered_at
        await self._execute(update(outbox).where(outbox.c.id == item_id).values(**values))

    async def withdraw_outbox(
        self, communication_ids: Iterable[str], *, now: datetime
    ) -> list[str]:
        ids = list(communication_ids)
        if not ids:
            return []
        c = outbox.c
        statement = (
            update(outbox)
            .where(
                c.communication_id.in_(ids),
                c.state == "pending",
                or_(c.leased_until.is_(None), c.leased_until < now),
            )
            .values(state="withdrawn", leased_until=None, last_error="withdrawn: request cancelled")
            .returning(c.communication_id)
        )
        return sorted({row[0] for row in await self._execute(statement)})

    async def list_outbox(self, *, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        statement = select(*_OUTBOX_COLUMNS).order_by(outbox.c.created_at).limit(limit)
        if state:
            statement = statement.where(outbox.c.state == state)
        return [_outbox_item(row) for row in await self._execute(statement)]

    async def retry_outbox(self, *, now: datetime, ids: Iterable[str] | None = None) -> int:
        statement = (
            update(outbox)
            .where(outbox.c.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=now, leased_until=None)
        )
        if ids is not None:
            statement = statement.where(outbox.c.id.in_(list(ids)))
        result = await self._execute(statement.returning(outbox.c.id))
        return len(result.all())

    async def set_job(
        self,
        task_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        due_at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "leased_until": None}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if due_at is not None:
            values["due_at"] = due_at
        await self._execute(
            update(workflow_jobs).where(workflow_jobs.c.task_id == task_id).values(**values)
        )

    async def _write_version(
        self, pk: int, version: int, now: datetime, method: str, content: dict[str, Any]
    ) -> None:
        self._versions.append(
            {
                "resource_pk": pk,
                "version_id": version,
                "last_updated": now,
                "method": method,
                "content": content,
            }
        )

    async def _write_index(self, pk: int, content: dict[str, Any]) -> None:
        rows = index_rows(content, base_url=self.base_url)
        batches: list[tuple[Any, list[dict[str, Any]]]] = [
            (search_token, [{"resource_pk": pk, "param": p, "system": s, "code": c} for p, s, c in rows.tokens]),
            (
                search_reference,
                [
                    {"resource_pk": pk, "param": p, "target_type": t, "target_id": i, "url": u}
                    for p, t, i, u in rows.references
                ],
            ),
            (search_date, [{"resource_pk": pk, "param": p, "low": lo, "high": hi} for p, lo, hi in rows.dates]),
            (search_string, [{"resource_pk": pk, "param": p, "value": v} for p, v in rows.strings]),
        ]  # fmt: skip
        for table, values in batches:
            self._index[table].extend(values)

    # -- search --------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchPage:
        await self.flush()  # the index must hold what this transaction wrote
        conditions = [resources.c.resource_type == query.resource_type]
        conditions.extend(_filter_condition(f) for f in query.filters)
        if query.compartment is not None:
            conditions.append(_compartment_condition(query.resource_type, *query.compartment))
        total = -1
        # A filtered first page counts its matches in the same statement (issue #18: one round
        # trip, not two), as a scalar subquery: it counts from the indexes alone, where a window
        # count over the page's rows read (and spilled) every match's content (issue #13).
        # A whole type is counted apart: COUNT(*) reads only the (resource_type, pk) index.
        counted_here = (
            query.with_total
            and not query.summary_count
            and query.count > 0
            and query.cursor is None
            and bool(query.filters or query.compartment is not None)
        )
        if (query.with_total or query.summary_count) and not counted_here:
            total = (
                await self._execute(select(func.count()).select_from(resources).where(*conditions))
            ).scalar_one()
        if query.summary_count or query.count == 0:
            return SearchPage([], [], total, None)
        page_conditions = list(conditions)
        if query.cursor is not None:
            page_conditions.append(resources.c.pk > query.cursor)
        columns: list[Any] = [
            resources.c.pk,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            resources.c.content,
        ]
        if counted_here:
            counted = select(func.count()).select_from(resources).where(*conditions).correlate(None)
            columns.append(counted.scalar_subquery().label("total"))
        statement: Select[Any] = (
            select(*columns).where(*page_conditions).order_by(resources.c.pk).limit(query.count + 1)
        )
        rows = (await self._execute(statement)).all()
        if counted_here:
            total = int(rows[0].total) if rows else 0
        next_cursor = rows[query.count - 1].pk if len(rows) > query.count else None
        rows = rows[: query.count]
        matches = [self._seen(_stored(query.resource_type, row)) for row in rows]
        included = await self._includes(query, [row.pk for row in rows], matches)
        return SearchPage(matches, included, total, next_cursor)

    async def _includes(
        self, query: SearchQuery, pks: Sequence[int], matches: Iterable[StoredResource]
    ) -> list[StoredResource]:
        if not query.includes or not pks:
            return []
        seen = {m.key for m in matches}
        wanted: dict[tuple[str, str], None] = {}
        for include in query.includes:
            statement = select(search_reference.c.target_type, search_reference.c.target_id).where(
                search_reference.c.resource_pk.in_(pks),
                search_reference.c.param == include.param.name,
                search_reference.c.url.is_(None),
            )
            if include.target_type:
                statement = statement.where(search_reference.c.target_type == include.target_type)
            for target_type, target_id in await self._execute(statement):
                if f"{target_type}/{target_id}" not in seen:
                    wanted[(target_type, target_id)] = None
        if not wanted:
            return []
        statement = select(
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            resources.c.content,
        ).where(tuple_(resources.c.resource_type, resources.c.id).in_(list(wanted)))
        return [
            StoredResource(row.resource_type, row.id, row.version_id, row.last_updated, row.content)
            for row in await self._execute(statement)
        ]


_OUTBOX_COLUMNS = (
    outbox.c.id,
    outbox.c.communication_id,
    outbox.c.destination,
    outbox.c.state,
    outbox.c.attempts,
    outbox.c.created_at,
    outbox.c.next_attempt_at,
    outbox.c.delivered_at,
    outbox.c.last_error,
    outbox.c.subscription_id,
    outbox.c.event_number,
)


def _outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(
        row.id,
        row.communication_id,
        row.destination,
        row.state,
        row.attempts,
        row.created_at,
        row.next_attempt_at,
        row.delivered_at,
        row.last_error,
        row.subscription_id,
        row.event_number,
    )


def _client(row: Any) -> ClientRecord:
    jwks = row.jwks if isinstance(row.jwks, dict) else orjson.loads(row.jwks)
    return ClientRecord(row.client_id, row.name, jwks, row.scope, row.patient)


# Statements built once: building a statement and its cache key costs more than SQLite takes to
# run these, so the hot ones take their values as parameters.
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_CURRENT = select(
    resources.c.id, resources.c.version_id, resources.c.last_updated, resources.c.content
).where(resources.c.resource_type == bindparam("p_type"), resources.c.id == bindparam("p_id"))
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()
_EXISTING = select(resources.c.resource_type, resources.c.id).where(
    tuple_(resources.c.resource_type, resources.c.id).in_(_KEYS)
)
_READ_MANY = select(
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.content,
).where(tuple_(resources.c.resource_type, resources.c.id).in_(_KEYS))
_INSERT_RESOURCES = insert(resources).returning(
    resources.c.pk, resources.c.resource_type, resources.c.id
)
_UPDATE_RESOURCE = (
    update(resources)
    .where(
        resources.c.resource_type == bindparam("p_type"),
        resources.c.id == bindparam("p_id"),
        resources.c.version_id == bindparam("p_version"),
    )
    .values(
        version_id=bindparam("p_new_version", type_=resources.c.version_id.type),
        last_updated=bindparam("p_updated", type_=resources.c.last_updated.type),
        content=bindparam("p_content", type_=resources.c.content.type),
    )
    .returning(resources.c.pk)
)
_INSERT_ROWS = {table: insert(table) for table in (resource_versions, *INDEX_TABLES)}
_DELETE_INDEX = {
    table: delete(table).where(table.c.resource_pk.in_(bindparam("pks", expanding=True)))
    for table in INDEX_TABLES
}
_INSERT_OUTBOX = insert(outbox)


def _stored(resource_type: str, row: Any) -> StoredResource:
    return StoredResource(resource_type, row.id, row.version_id, row.last_updated, row.content)


def _compartment_condition(
    resource_type: str, params: tuple[str, ...], patient_id: str
) -> ColumnElement[bool]:
    """Only resources in Patient/`patient_id`'s compartment (the Patient itself, or a reference
    to it through one of `params`)."""
    if resource_type == "Patient":
        return resources.c.id == patient_id
    if not params:
        return false()
    return exists().where(
        search_reference.c.resource_pk == resources.c.pk,
        search_reference.c.param.in_(params),
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id == patient_id,
        search_reference.c.url.is_(None),
    )


def _filter_condition(flt: Filter) -> ColumnElement[bool]:
    """SQL for one filter: its criteria ORed (and negated for `:not`)."""
    param = flt.param
    if param.type == "id":
        condition: ColumnElement[bool] = resources.c.id.in_([str(c) for c in flt.criteria])
    elif param.type == "last-updated":
        condition = or_(
            *(
                _date_match(c, resources.c.last_updated, resources.c.last_updated)
                for c in flt.criteria
                if isinstance(c, DateCriterion)
            )
        )
    else:
        table = {
            "token": search_token,
            "reference": search_reference,
            "date": search_date,
            "string": search_string,
        }[param.type]
        matches = or_(*(_criterion(table, c) for c in flt.criteria))
        condition = exists().where(
            table.c.resource_pk == resources.c.pk, table.c.param == param.name, matches
        )
    return not_(condition) if flt.negate else condition


def _criterion(table: Table, criterion: object) -> ColumnElement[bool]:
    if isinstance(criterion, TokenCriterion):
        parts = []
        if criterion.code is not None:
            parts.append(table.c.code == criterion.code)
        if criterion.match_system:
            parts.append(
                table.c.system == criterion.system
                if criterion.system is not None
                else table.c.system.is_(None)
            )
        return and_(*parts) if parts else true()
    if isinstance(criterion, ReferenceCriterion):
        if criterion.url is not None:
            return table.c.url == criterion.url
        parts = [table.c.target_id == criterion.id, table.c.url.is_(None)]
        if criterion.resource_type:
            parts.append(table.c.target_type == criterion.resource_type)
        return and_(*parts)
    if isinstance(criterion, DateCriterion):
        return _date_match(criterion, table.c.low, table.c.high)
    if isinstance(criterion, StringCriterion):
        escaped = criterion.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if criterion.modifier == "exact":
            return table.c.value == criterion.value
        if criterion.modifier == "contains":
            return table.c.value.like(f"%{escaped}%", escape="\\")
        return table.c.value.like(f"{escaped}%", escape="\\")
    return false()


def _date_match(
    c: DateCriterion, low: ColumnElement[datetime], high: ColumnElement[datetime]
) -> ColumnElement[bool]:
    """FHIR date prefixes over ranges (search.html#prefix): the stored range vs the searched one."""
    if c.prefix == "eq":
        return and_(low >= c.low, high <= c.high)
    if c.prefix == "ne":
        return not_(and_(low >= c.low, high <= c.high))
    if c.prefix == "gt":
        return high > c.high
    if c.prefix == "lt":
        return low < c.low
    if c.prefix == "ge":
        return or_(high > c.high, and_(low >= c.low, high <= c.high))
    if c.prefix == "le":
        return or_(low < c.low, and_(low >= c.low, high <= c.high))
    if c.prefix == "sa":
        return low > c.high
    if c.prefix == "eb":
        return high < c.low
    return and_(low <= c.high, high >= c.low)  # ap: the ranges overlap
