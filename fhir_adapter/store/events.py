"""Subscription events of a SQL transaction (`tx.events`): numbered per Subscription."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from fhir_adapter.ports.store import SubscriptionEvent
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.tables import outbox, subscription_events


class SqlEvents:
    """Implements ports.store.EventLog on a transaction's connection."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    async def add(self, subscription_id: str, focus: str, *, now: datetime) -> int:
        number = await self.count(subscription_id) + 1
        await self._db.execute(
            insert(subscription_events).values(
                subscription_id=subscription_id, event_number=number, focus=focus, occurred_at=now
            )
        )
        return number

    async def last_sent(self, subscription_id: str) -> datetime | None:
        statement = select(func.max(outbox.c.created_at)).where(
            outbox.c.subscription_id == subscription_id
        )
        value = (await self._db.execute(statement)).scalar_one_or_none()
        if value is None:
            return None
        stamp: datetime = (
            value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        )
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

    async def count(self, subscription_id: str) -> int:
        statement = select(func.coalesce(func.max(subscription_events.c.event_number), 0)).where(
            subscription_events.c.subscription_id == subscription_id
        )
        return int((await self._db.execute(statement)).scalar_one())

    async def read(
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
            for r in await self._db.execute(statement)
        ]
