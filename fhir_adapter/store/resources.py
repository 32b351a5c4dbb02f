"""The resources part of a SQL transaction (`tx.resources`): current versions, history, the
search index, and writes batched into a few statements per transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    bindparam,
    delete,
    insert,
    literal,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from fhir_adapter.errors import ConflictError
from fhir_adapter.fhir.search import SearchQuery
from fhir_adapter.fhir.search_index import index_rows
from fhir_adapter.ports.store import SearchPage, StoredResource
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.row_batches import NEW, rows_statement
from fhir_adapter.store.search_filters import Shape, conditions_shape, conditions_sql, prefixed
from fhir_adapter.store.search_sql import search_page, stored
from fhir_adapter.store.tables import (
    INDEX_TABLES,
    resource_versions,
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
    stored_json,
)


class SqlResources:
    """Implements ports.store.ResourceRows on a transaction's connection."""

    def __init__(self, db: SqlConnection, *, base_url: str | None) -> None:
        self._db = db
        self._execute = db.execute  # every statement: after the queued inserts
        self.base_url = base_url
        self.is_postgres = db.is_postgres
        # Version and index rows are written in one batch per table when the transaction ends
        # (or before a search needs them): a few statements for a whole Bundle, not a few per entry.
        self._versions: list[dict[str, Any]] = []
        self._index: dict[Any, list[dict[str, Any]]] = {table: [] for table in INDEX_TABLES}
        self._stale: set[int] = set()  # resources whose written index rows are outdated
        self._unflushed: set[int] = set()  # resources created here whose rows are all queued
        # Resources this transaction has seen exist (read, written, checked). Resources are never
        # deleted, so reference checks need not ask again.
        self._known: set[tuple[str, str]] = set()
        # What this transaction's batched look-ups returned: a read_many of them is answered
        # here (the version this transaction saw), not asked again.
        self._fetched: dict[tuple[str, str], StoredResource] = {}
        # New resources wait here and go in with one INSERT when the next statement runs.
        self._inserts: list[dict[str, Any]] = db.queued
        # Earlier versions of queued resources replaced before their INSERT ran (a Task received
        # in the transaction that created it): their history rows go in with the INSERT.
        self._earlier: dict[tuple[str, str], list[tuple[int, datetime, dict[str, Any]]]] = {}
        db.write_queued = self._write_queued

    def pending(self) -> bool:
        """Whether writes wait to be flushed."""
        return bool(
            self._inserts
            or self._versions
            or self._stale
            or any(self._index.values())
            or self._db.queued_jobs
            or self._db.queued_outbox
        )

    async def _write_queued(self) -> None:
        """Before a statement that may read or reference the queued resources."""
        if self.is_postgres:
            await self.flush()  # all of it in one statement
        else:
            await self._insert_queued()

    async def _insert_queued(self) -> None:
        rows = list(self._inserts)
        self._inserts.clear()  # the list the connection watches
        try:
            result = await self._db.execute_before_queued(_INSERT_RESOURCES, rows)
        except IntegrityError as exc:  # a failed insert fails the whole transaction
            raise _already_exists(rows) from exc
        pks = {(r.resource_type, r.id): r.pk for r in result}
        for row in rows:
            pk = pks[(row["resource_type"], row["id"])]
            self._write_new_rows({"resource_pk": pk}, row)
            self._unflushed.add(pk)

    def _write_new_rows(self, owner: dict[str, Any], row: dict[str, Any]) -> None:
        """The version rows (earlier ones too, if replaced while queued) and index rows of a
        new resource; `owner` names it by its key or, not inserted yet, by (type, id)."""
        method = "create"
        for version, at, content in self._earlier.pop((row["resource_type"], row["id"]), ()):
            self._write_version(owner, version, at, method, content)
            method = "update"
        self._write_version(owner, row["version_id"], row["last_updated"], method, row["content"])
        self._write_index(owner, row["content"])

    async def _flush_in_one(self) -> None:
        """PostgreSQL: the queued resources, every pending row and the workflow jobs and outbox
        items added (store/queues.py) in one statement."""
        new = list(self._inserts)
        self._inserts.clear()
        for row in new:
            self._write_new_rows({NEW: (row["resource_type"], row["id"])}, row)
        rows = {resource_versions.name: self._versions}
        rows |= {table.name: batch for table, batch in self._index.items()}
        queues = {"workflow_jobs": self._db.queued_jobs, "outbox": self._db.queued_outbox}
        built = rows_statement(new, self._stale, rows, {k: list(v) for k, v in queues.items()})
        for queue in queues.values():
            queue.clear()
        self._stale.clear()
        self._versions = []
        self._index = {table: [] for table in INDEX_TABLES}
        if built is None:
            return
        try:
            await self._db.execute_before_queued(*built)
        except IntegrityError as exc:
            if not new:
                raise
            raise _already_exists(new) from exc

    async def flush(self) -> None:
        """Write the queued resources, then their version and index rows."""
        if self.is_postgres:
            await self._flush_in_one()
            return
        if self._inserts:
            await self._insert_queued()
        self._unflushed.clear()
        if self._stale:
            stale = list(self._stale)
            for table in INDEX_TABLES:
                await self._execute(_DELETE_INDEX[table], {"pks": stale})
            self._stale.clear()
        if self._versions:
            await self._execute(_INSERT_ROWS[resource_versions], self._versions)
            self._versions = []
        for table, rows in self._index.items():
            if rows:
                await self._execute(_INSERT_ROWS[table], rows)
                self._index[table] = []

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredResource | None:
        return await self._read_one(_CURRENT, resource_type, id)

    async def read_for_update(self, resource_type: str, id: str) -> StoredResource | None:
        statement = _CURRENT_FOR_UPDATE if self.is_postgres else _CURRENT
        return await self._read_one(statement, resource_type, id)

    async def _read_one(self, statement: Any, resource_type: str, id: str) -> StoredResource | None:
        """A resource queued here is read from the queue (only this transaction sees it); any
        other is read without writing the queue first, so the queue goes in as one INSERT."""
        queued = self._queued(resource_type, id)
        if queued is not None:
            return queued
        parameters = {"p_type": resource_type, "p_id": id}
        rows = await self._db.rows(statement, parameters, queued=False)
        if not rows:
            return None
        ((id, version_id, last_updated, json),) = rows  # by position (SqlConnection.rows)
        return self._seen(StoredResource(resource_type, id, version_id, last_updated, json=json))

    def _queued(self, resource_type: str, id: str) -> StoredResource | None:
        for row in self._inserts:
            if row["resource_type"] == resource_type and row["id"] == id:
                return StoredResource(
                    resource_type, id, row["version_id"], row["last_updated"], row["content"]
                )
        return None

    async def existing(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        requested = list(dict.fromkeys(keys))
        known = {key for key in requested if key in self._known}
        wanted = [key for key in requested if key not in known]
        if not wanted:
            return known
        # Queued inserts are known already and nothing is ever deleted: no need to write them first.
        rows = await self._db.execute_before_queued(_EXISTING, {"keys": wanted})
        found = {(row.resource_type, row.id) for row in rows}
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
        statement = _versions_of(resource_type, id).where(
            resource_versions.c.version_id == version_id
        )
        row = (await self._execute(statement)).first()
        return stored(resource_type, row) if row else None

    async def read_many(self, keys: Iterable[tuple[str, str]]) -> dict[str, StoredResource]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        found = [q for q in (self._queued(*key) for key in wanted) if q is not None]
        found += [self._fetched[key] for key in wanted if key in self._fetched]
        wanted = [key for key in wanted if f"{key[0]}/{key[1]}" not in {f.key for f in found}]
        if wanted:  # like _read_one: the queue need not be written first
            found += [
                self._seen(stored(r.resource_type, r))
                for r in await self._db.execute_before_queued(_READ_MANY, {"keys": wanted})
            ]
        return {f.key: f for f in found}

    async def history(self, resource_type: str, id: str) -> list[StoredResource]:
        statement = _versions_of(resource_type, id).order_by(resource_versions.c.version_id.desc())
        await self.flush()
        return [stored(resource_type, row) for row in await self._execute(statement)]

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
        queued = self._queued_row(current)
        if queued is not None:  # not inserted yet: the INSERT takes the new version instead
            earlier = (queued["version_id"], queued["last_updated"], queued["content"])
            self._earlier.setdefault((current.resource_type, current.id), []).append(earlier)
            queued.update(version_id=version, last_updated=now, content=content)
            return StoredResource(current.resource_type, current.id, version, now, content)
        result = await self._db.execute_before_queued(  # a row written before: the queue may wait
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
        self._write_version({"resource_pk": pk}, version, now, "update", content)
        for table, rows in self._index.items():  # rows of an older version not written yet
            self._index[table] = [row for row in rows if row.get("resource_pk") != pk]
        if pk not in self._unflushed:
            self._stale.add(pk)
        self._write_index({"resource_pk": pk}, content)
        replaced = StoredResource(current.resource_type, current.id, version, now, content)
        if (current.resource_type, current.id) in self._fetched:
            self._fetched[(current.resource_type, current.id)] = replaced
        return replaced

    def _queued_row(self, current: StoredResource) -> dict[str, Any] | None:
        for row in self._inserts:
            if (row["resource_type"], row["id"], row["version_id"]) == (
                current.resource_type,
                current.id,
                current.version_id,
            ):
                return row
        return None

    async def lock(self, *keys: str) -> bool:
        if not (self.is_postgres and keys):  # SQLite writers are serialized by BEGIN IMMEDIATE
            return False
        # One statement for all of them, taken in ascending order: two transactions wanting
        # overlapping keys queue behind each other instead of deadlocking.
        digests = sorted({_lock_digest(key) for key in keys})
        await self._execute(_LOCK_ALL, {"keys": digests})
        return True

    async def matches(
        self, queries: Sequence[SearchQuery], *, known: Iterable[tuple[str, str]] = ()
    ) -> list[list[StoredResource]]:
        """The first `count` matches of each query (filters only), all in one statement, which
        also finds which of the `known` keys exist (for reference checks to come)."""
        keys = [key for key in dict.fromkeys(known) if key not in self._known]
        if len(queries) <= 1 and not keys:
            return [(await self.search(query)).matches for query in queries]
        await self.flush()  # the index must hold what this transaction wrote
        shapes = []
        values: dict[str, Any] = {"keys": keys}
        for position, query in enumerate(queries):
            shape, found_values = conditions_shape(query)
            shapes.append((shape, query.count))
            values |= {f"q{position}_{name}": value for name, value in found_values.items()}
        found: list[list[StoredResource]] = [[] for _ in queries]
        statement = _matches_statement(tuple(shapes), bool(keys))
        for row in await self._execute(statement, values):
            match = self._seen(stored(row.resource_type, row))
            self._fetched[(match.resource_type, match.id)] = match
            if row.q >= 0:
                found[row.q].append(match)
        return found

    async def search(self, query: SearchQuery) -> SearchPage:
        if not self._db.read_only:  # a read-only transaction has nothing to flush
            await self.flush()  # the index must hold what this transaction wrote
        page = await search_page(self._db, query)
        if not self._db.read_only:  # what a later write's reference checks may use
            for match in page.matches:
                self._seen(match)
        return page

    def _write_version(
        self,
        owner: dict[str, Any],
        version: int,
        now: datetime,
        method: str,
        content: dict[str, Any],
    ) -> None:
        self._versions.append(
            {
                **owner,
                "version_id": version,
                "last_updated": now,
                "method": method,
                "content": content,
            }
        )

    def _write_index(self, owner: dict[str, Any], content: dict[str, Any]) -> None:
        rows = index_rows(content, base_url=self.base_url)
        batches: list[tuple[Any, list[dict[str, Any]]]] = [
            (search_token, [{**owner, "param": p, "system": s, "code": c} for p, s, c in rows.tokens]),
            (
                search_reference,
                [
                    {**owner, "param": p, "target_type": t, "target_id": i, "url": u}
                    for p, t, i, u in rows.references
                ],
            ),
            (search_date, [{**owner, "param": p, "low": lo, "high": hi} for p, lo, hi in rows.dates]),
            (search_string, [{**owner, "param": p, "value": v} for p, v in rows.strings]),
        ]  # fmt: skip
        for table, values in batches:
            self._index[table].extend(values)


def _already_exists(rows: list[dict[str, Any]]) -> ConflictError:
    keys = [f"{row['resource_type']}/{row['id']}" for row in rows]
    what = keys[0] if len(keys) == 1 else f"one of {', '.join(keys)}"
    return ConflictError(f"{what} already exists")


def _lock_digest(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def _tagged(position: int) -> Select[Any]:
    """A resource's columns, tagged with the position of what it answers (-1: a known key)."""
    return select(
        literal(position, Integer).label("q"),
        resources.c.pk,
        resources.c.resource_type,
        resources.c.id,
        resources.c.version_id,
        resources.c.last_updated,
        stored_json(resources.c.content),
    )


@lru_cache(maxsize=256)
def _matches_statement(shapes: tuple[tuple[Shape, int], ...], known: bool) -> Any:
    """One statement for queries of these shapes and counts (and the known keys, if `known`):
    built once per shape, each query's values named after its position (issue #13: building
    it for each submission was a sixth of a submission's CPU)."""
    arms = [_first_matches(n, shape, count) for n, (shape, count) in enumerate(shapes)]
    if known:
        arms.append(_KNOWN_ARM)
    return union_all(*arms)


def _first_matches(position: int, shape: Shape, count: int) -> Select[Any]:
    """The first `count` matches of one query, tagged with its position."""
    conditions = conditions_sql(shape, prefixed(f"q{position}_"))
    first = _tagged(position).where(*conditions).order_by(resources.c.pk).limit(count).subquery()
    return select(first)  # LIMIT inside a UNION ALL arm needs its own subquery on SQLite


def _versions_of(resource_type: str, id: str) -> Select[Any]:
    """The stored versions of one resource (id, version_id, last_updated, content)."""
    return (
        select(
            resources.c.id,
            resource_versions.c.version_id,
            resource_versions.c.last_updated,
            stored_json(resource_versions.c.content),
        )
        .join(resources, resources.c.pk == resource_versions.c.resource_pk)
        .where(resources.c.resource_type == resource_type, resources.c.id == id)
    )


# Statements built once: building a statement and its cache key costs more than SQLite takes to
# run these, so the hot ones take their values as parameters.
_KEYS: BindParameter[Any] = bindparam("keys", expanding=True)
_CURRENT = select(
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    stored_json(resources.c.content),
).where(resources.c.resource_type == bindparam("p_type"), resources.c.id == bindparam("p_id"))
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()
_KNOWN_ARM = _tagged(-1).where(tuple_(resources.c.resource_type, resources.c.id).in_(_KEYS))
_LOCK_ALL = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k"
)
_EXISTING = select(resources.c.resource_type, resources.c.id).where(
    tuple_(resources.c.resource_type, resources.c.id).in_(_KEYS)
)
_READ_MANY = select(
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    stored_json(resources.c.content),
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
