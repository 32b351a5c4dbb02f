"""PostgreSQL: everything a transaction queued (new resources, versions, search index rows, the
DELETE of outdated index rows, workflow jobs, outbox items) written with one statement.

Each kind of row is one part of a data-modifying WITH, its values passed as arrays and spread
by unnest(). Rows of new resources name them by (type, id) and take their key from what the
resources' INSERT returns. The parts share one snapshot: the DELETE cannot see the rows
inserted beside it, and a foreign key sees the resources inserted in the same statement.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import TextClause, text

from fhir_adapter.store.tables import INDEX_TABLES

# The columns each row kind is written with (the key first), and their array types.
ROW_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "resource_versions": ("resource_pk", "version_id", "last_updated", "method", "content"),
    "search_token": ("resource_pk", "param", "system", "code"),
    "search_reference": ("resource_pk", "param", "target_type", "target_id", "url"),
    "search_date": ("resource_pk", "param", "low", "high"),
    "search_string": ("resource_pk", "param", "value"),
}
_RESOURCE_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "content")
# Rows of other tables added in the same transaction (store/queues.py): their columns and what
# follows their INSERT. A Task that has its job already keeps it.
QUEUE_INSERTS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "workflow_jobs": (
        ("task_id", "state", "due_at", "next_attempt_at", "attempts"),
        " ON CONFLICT (task_id) DO NOTHING",
    ),
    "outbox": (
        (
            "id",
            "communication_id",
            "destination",
            "state",
            "attempts",
            "created_at",
            "next_attempt_at",
            "subscription_id",
            "event_number",
            "payload",
        ),
        "",
    ),
}
_ARRAY_TYPES = {
    "resource_pk": "bigint",
    "version_id": "integer",
    "attempts": "integer",
    "event_number": "integer",
    "last_updated": "timestamptz",
    "due_at": "timestamptz",
    "next_attempt_at": "timestamptz",
    "created_at": "timestamptz",
    "payload": "json",
    "low": "timestamptz",
    "high": "timestamptz",
    "content": "json",
}
NEW = "resource_key"  # rows of a resource inserted by the same statement: (type, id), no pk yet


def rows_statement(
    new: Sequence[Mapping[str, Any]],
    stale: Collection[int],
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    queues: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> tuple[TextClause, dict[str, Any]] | None:
    """The statement and its parameters; None when nothing waits. `queues`: rows of the tables
    of QUEUE_INSERTS, by table name."""
    parameters: dict[str, Any] = {"stale": sorted(stale)}
    if new:
        parameters |= _arrays("r", _RESOURCE_COLUMNS, new)
    queued = {name: list(batch) for name, batch in (queues or {}).items() if batch}
    if "workflow_jobs" in queued:  # one row a Task: the first added, as ON CONFLICT would keep
        first: dict[str, Mapping[str, Any]] = {}
        for job in queued["workflow_jobs"]:
            first.setdefault(job["task_id"], job)
        queued["workflow_jobs"] = list(first.values())
    for name, added in queued.items():
        parameters |= _arrays(f"q_{name}", QUEUE_INSERTS[name][0], added)
    by_pk: list[str] = []
    by_key: list[str] = []
    for name, batch in rows.items():
        columns = ROW_COLUMNS[name]
        known = [row for row in batch if NEW not in row]
        fresh = [row for row in batch if NEW in row]
        if known:
            by_pk.append(name)
            parameters |= _arrays(f"p_{name}", columns, known)
        if fresh:
            by_key.append(name)
            parameters |= _arrays(f"n_{name}", ("resource_type", "id", *columns[1:]), fresh)
    if not (new or stale or by_pk or by_key or queued):
        return None
    statement = _statement(bool(new), bool(stale), tuple(by_pk), tuple(by_key), tuple(queued))
    return statement, parameters


def _arrays(
    prefix: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    arrays: dict[str, list[Any]] = {}
    for column in columns:
        if column in ("resource_type", "id") and NEW in rows[0]:
            values = [row[NEW][column == "id"] for row in rows]
        else:
            values = [row[column] for row in rows]
        if column in ("content", "payload"):
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        arrays[f"{prefix}_{column}"] = values
    return arrays


def _unnest(prefix: str, columns: Sequence[str]) -> str:
    return ", ".join(f"CAST(:{prefix}_{c} AS {_ARRAY_TYPES.get(c, 'text')}[])" for c in columns)


@cache
def _statement(
    new: bool, stale: bool, by_pk: tuple[str, ...], by_key: tuple[str, ...], queued: tuple[str, ...]
) -> TextClause:
    parts = []
    if new:
        parts.append(
            f"r AS (INSERT INTO resources ({', '.join(_RESOURCE_COLUMNS)}) "
            f"SELECT * FROM unnest({_unnest('r', _RESOURCE_COLUMNS)}) RETURNING pk, resource_type, id)"
        )
    if stale:
        parts += [
            f"d_{table.name} AS (DELETE FROM {table.name} "
            "WHERE resource_pk = ANY(CAST(:stale AS bigint[])))"
            for table in INDEX_TABLES
        ]
    for name in by_pk:
        columns = ROW_COLUMNS[name]
        parts.append(
            f"p_{name} AS (INSERT INTO {name} ({', '.join(columns)}) "
            f"SELECT * FROM unnest({_unnest(f'p_{name}', columns)}))"
        )
    for name in by_key:
        columns = ROW_COLUMNS[name]
        named = ("resource_type", "id", *columns[1:])
        parts.append(
            f"n_{name} AS (INSERT INTO {name} ({', '.join(columns)}) "
            f"SELECT r.pk, {', '.join(f'x.{c}' for c in columns[1:])} "
            f"FROM unnest({_unnest(f'n_{name}', named)}) AS x({', '.join(named)}) "
            "JOIN r ON r.resource_type = x.resource_type AND r.id = x.id)"
        )
    for name in queued:
        columns, tail = QUEUE_INSERTS[name]
        parts.append(
            f"q_{name} AS (INSERT INTO {name} ({', '.join(columns)}) "
            f"SELECT * FROM unnest({_unnest(f'q_{name}', columns)}){tail})"
        )
    return text(f"WITH {', '.join(parts)} SELECT {'(SELECT count(*) FROM r)' if new else '0'}")
