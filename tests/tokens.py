"""Access tokens for tests: minted by the built-in issuer in process, or fetched over HTTP with
the real SMART Backend Services flow (a key pair made here, a registered client, a signed
client assertion)."""

from __future__ import annotations

import httpx

from fhir_adapter.bootstrap import Container
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.security.client import ClientCredentials, new_ec_key, request_token
from fhir_adapter.security.issuer import register_client

# What the EHR-, payer- and operator-side tests act as: everything, audit log included.
ADMIN_SCOPE = "system/*.cruds system/AuditEvent.rs"


def bearer(
    container: Container, scope: str = ADMIN_SCOPE, patient: str | None = None
) -> dict[str, str]:
    assert container.issuer is not None
    token = container.issuer.mint("test-client", scope, patient=patient)
    return {"authorization": f"Bearer {token}"}


async def register(
    store: ResourceStore,
    scope: str = ADMIN_SCOPE,
    *,
    patient: str | None = None,
    name: str = "test",
) -> ClientCredentials:
    private, kid, jwks = new_ec_key()
    client = await register_client(store, name=name, jwks=jwks, scope=scope, patient=patient)
    return ClientCredentials(client.client_id, private, kid)


async def fetch_token(
    http: httpx.AsyncClient, token_url: str, client: ClientCredentials, scope: str = ADMIN_SCOPE
) -> str:
    """The SMART Backend Services token request, over HTTP."""
    return str((await request_token(http, token_url, client, scope))["access_token"])


async def live_token(database_url: str, origin: str, scope: str = ADMIN_SCOPE) -> str:
    """For a server in another process: register a client in its database, then get a token
    from its token endpoint exactly as a deployed system would."""
    from fhir_adapter.store.engine import create_engine
    from fhir_adapter.store.sql import SqlResourceStore

    engine = create_engine(database_url)
    try:
        client = await register(SqlResourceStore(engine), scope)
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await fetch_token(http, f"{origin}/auth/token", client, scope)
