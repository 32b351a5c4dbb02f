"""The built-in authorization server's records in a SQL transaction (`tx.auth`): signing keys,
registered clients and the client assertions already used."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from fhir_adapter.ports.store import ClientRecord, SigningKey
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.tables import auth_clients, auth_keys, auth_used_assertions


class SqlAuth:
    """Implements ports.store.AuthRecords on a transaction's connection."""

    def __init__(self, db: SqlConnection) -> None:
        self._db = db

    async def signing_key(self) -> SigningKey | None:
        statement = select(auth_keys).order_by(auth_keys.c.created_at.desc()).limit(1)
        row = (await self._db.execute(statement)).first()
        return SigningKey(row.kid, row.algorithm, row.private_pem) if row else None

    async def add_signing_key(self, key: SigningKey, *, now: datetime) -> None:
        await self._db.execute(
            insert(auth_keys).values(
                kid=key.kid, algorithm=key.algorithm, private_pem=key.private_pem, created_at=now
            )
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        statement = select(auth_clients).where(auth_clients.c.client_id == client_id)
        row = (await self._db.execute(statement)).first()
        return _client(row) if row else None

    async def list_clients(self) -> list[ClientRecord]:
        statement = select(auth_clients).order_by(auth_clients.c.created_at)
        return [_client(row) for row in await self._db.execute(statement)]

    async def add_client(self, client: ClientRecord, *, now: datetime) -> None:
        await self._db.execute(
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
        result = await self._db.execute(
            delete(auth_clients).where(auth_clients.c.client_id == client_id)
        )
        return bool(result.rowcount)

    async def use_assertion(
        self, client_id: str, jti: str, *, expires_at: datetime, now: datetime
    ) -> bool:
        await self._db.execute(
            delete(auth_used_assertions).where(auth_used_assertions.c.expires_at < now)
        )
        try:
            async with self._db.conn.begin_nested():
                await self._db.execute(
                    insert(auth_used_assertions).values(
                        client_id=client_id, jti=jti, expires_at=expires_at
                    )
                )
        except IntegrityError:
            return False
        return True


def _client(row: Any) -> ClientRecord:
    jwks = row.jwks if isinstance(row.jwks, dict) else orjson.loads(row.jwks)
    return ClientRecord(row.client_id, row.name, jwks, row.scope, row.patient)
