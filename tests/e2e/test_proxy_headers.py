"""`serve` believes X-Forwarded-For only from FHIR_ADAPTER_FORWARDED_ALLOW_IPS (docs/operations.md).

The client address is what the audit trail records and what unauthenticated requests are
rate-limited by; behind a TLS proxy it must be the client's, and nobody else may choose it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_live_server import _server_env, _wait_until_up, free_port, start_server
from tests.tokens import live_token

pytestmark = pytest.mark.live

CLIENT = "203.0.113.9"  # TEST-NET-3: the address a proxy says the request came from


async def audited_addresses(trusted: str, tmp_path: Path) -> set[str]:
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    env = _server_env(port, database_url)
    env["FHIR_ADAPTER_FORWARDED_ALLOW_IPS"] = trusted
    server = start_server(port, env, tmp_path)
    try:
        await _wait_until_up(server)
        token = await live_token(database_url, f"http://127.0.0.1:{port}")
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
            searched = await client.get("/Patient", headers={"x-forwarded-for": CLIENT})
            assert searched.status_code == 200, searched.text
            deadline = time.monotonic() + 10
            while True:  # AuditEvents are written in batches, a moment later
                found = (await client.get("/AuditEvent", params={"_count": "100"})).json()
                addresses = {
                    agent["network"]["address"]
                    for entry in found.get("entry", [])
                    for agent in entry["resource"].get("agent", [])
                    if "network" in agent
                }
                if addresses or time.monotonic() > deadline:
                    return addresses
                await asyncio.sleep(0.2)
    finally:
        server.stop()


async def test_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    assert CLIENT in await audited_addresses("127.0.0.1", tmp_path)


async def test_anyone_else_cannot_choose_the_address_recorded(tmp_path: Path) -> None:
    addresses = await audited_addresses("10.9.9.9", tmp_path)
    assert addresses and CLIENT not in addresses
    assert "127.0.0.1" in addresses
