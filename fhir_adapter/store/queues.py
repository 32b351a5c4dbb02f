"""The queues of a SQL transaction: workflow jobs (`tx.jobs`) and the delivery outbox
(`tx.outbox`), both leased to one worker at a time through `lease`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, insert, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fhir_adapter.ports.store import RENDER, OutboxItem, WorkflowJob
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.tables import outbox, workflow_jobs


async def lease(
    db: SqlConnection,
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
    if db.is_postgres:  # several workers: each skips what another holds
        statement = statement.with_for_update(skip_locked=True)
    ids = [row[0] for row in await db.execute(statement)]
    if not ids:
        return []
    result = await db.execute(
        update(table)
        .where(key.in_(ids))
        .values(leased_until=lease_until, attempts=table.c.attempts + 1)
        .returning(*returning)
    )
    leased: Sequence[Any] = result.all()
    return leased


class SqlJobs:
    """Implements ports.store.JobQueue on a transaction's connection."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    async def add(self, task_id: str, *, due_at: datetime, first_attempt_at: datetime) -> None:
        values = {
            "task_id": task_id,
            "state": "evaluate",
            "due_at": due_at,
            "next_attempt_at": first_attempt_at,
            "attempts": 0,
        }
        if self._db.is_postgres:  # written by the statement that writes the Task (issue #13)
            self._db.queued_jobs.append(values)
            return
        # One statement: a Task that has its job already keeps it.
        await self._db.execute(
            sqlite_insert(workflow_jobs)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["task_id"])
        )

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, overdue: bool = False
    ) -> list[WorkflowJob]:
        jobs = workflow_jobs.c
        if overdue:
            wanted = and_(jobs.state != "done", jobs.due_at <= now)
            order = jobs.due_at
        else:
            wanted = and_(jobs.state == "evaluate", jobs.next_attempt_at <= now)
            order = jobs.next_attempt_at
        result = await lease(
            self._db,
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

    async def get(self, task_id: str) -> WorkflowJob | None:
        jobs = workflow_jobs.c
        row = (
            await self._db.execute(
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

    async def undecided(self, *, due_before: datetime, limit: int) -> list[WorkflowJob]:
        jobs = workflow_jobs.c
        rows = await self._db.execute(
            select(jobs.task_id, jobs.state, jobs.due_at, jobs.next_attempt_at, jobs.attempts)
            .where(jobs.state != "done", jobs.due_at <= due_before)
            .order_by(jobs.due_at, jobs.task_id)
            .limit(limit)
        )
        return [
            WorkflowJob(r.task_id, r.state, r.due_at, r.next_attempt_at, r.attempts) for r in rows
        ]

    async def set(
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
        await self._db.execute(
            update(workflow_jobs).where(workflow_jobs.c.task_id == task_id).values(**values)
        )


class SqlOutbox:
    """Implements ports.store.Outbox on a transaction's connection. Items added are written
    together, in one statement, before the next outbox statement or the commit."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db
        self._added = db.queued_outbox  # PostgreSQL: written by the resources' flush too
        self.queued = False  # work added: the store wakes the worker when this commits

    async def add(self, item: OutboxItem) -> None:
        self.queued = True
        self._added.append(
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
                "payload": item.payload,
            }
        )

    async def flush(self) -> None:
        """Write the items added so far: one INSERT, several rows; on PostgreSQL part of the
        statement that writes what the transaction queued (issue #13: one statement fewer)."""
        if not self._added:
            return
        if self._db.is_postgres and self._db.write_queued is not None:
            await self._db.write_queued()
            return
        rows = list(self._added)
        self._added.clear()  # the list the resources' flush watches
        await self._db.execute(_INSERT_OUTBOX, rows)

    async def claim(
        self, *, now: datetime, lease_until: datetime, limit: int, render: bool = False
    ) -> list[OutboxItem]:
        await self.flush()
        c = outbox.c
        kind = c.destination == RENDER if render else c.destination != RENDER
        result = await lease(
            self._db,
            outbox,
            c.id,
            and_(c.state == "pending", c.next_attempt_at <= now, kind),
            c.next_attempt_at,
            now=now,
            limit=limit,
            lease_until=lease_until,
            returning=_OUTBOX_COLUMNS,
        )
        return [_outbox_item(row) for row in result]

    async def set(
        self,
        item_id: str,
        *,
        state: str,
        next_attempt_at: datetime | None = None,
        delivered_at: datetime | None = None,
        error: str | None = None,
    ) -> None:
        await self.flush()
        values: dict[str, Any] = {"state": state, "leased_until": None, "last_error": error}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        if delivered_at is not None:
            values["delivered_at"] = delivered_at
        await self._db.execute(update(outbox).where(outbox.c.id == item_id).values(**values))

    async def withdraw(self, communication_ids: Iterable[str], *, now: datetime) -> list[str]:
        await self.flush()
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
        return sorted({row[0] for row in await self._db.execute(statement)})

    async def items(self, *, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        await self.flush()
        statement = select(*_OUTBOX_COLUMNS).order_by(outbox.c.created_at).limit(limit)
        if state:
            statement = statement.where(outbox.c.state == state)
        return [_outbox_item(row) for row in await self._db.execute(statement)]

    async def retry(self, *, now: datetime, ids: Iterable[str] | None = None) -> int:
        await self.flush()
        statement = (
            update(outbox)
            .where(outbox.c.state == "failed")
            .values(state="pending", attempts=0, next_attempt_at=now, leased_until=None)
        )
        if ids is not None:
            statement = statement.where(outbox.c.id.in_(list(ids)))
        result = await self._db.execute(statement.returning(outbox.c.id))
        return len(result.all())


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
    outbox.c.payload,
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
        row.payload,
    )


_INSERT_OUTBOX = insert(outbox)
