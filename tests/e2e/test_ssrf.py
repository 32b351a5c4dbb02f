"""Issue #16, finding 5: rest-hook endpoints cannot reach the adapter's own network (SSRF)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.bootstrap import Container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from tests.conftest import BASE_URL
from tests.e2e.test_live_server import free_port
from tests.e2e.test_security_findings import container_with
from tests.e2e.test_subscriptions import subscription
from tests.fakes import FrozenClock
from tests.tokens import bearer


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Production defaults: no host is allow-listed."""
    return Settings(database_url=database_url, base_url=BASE_URL, delivery_timeout_seconds=3)


@pytest.fixture
async def api(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient, clock: FrozenClock
) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    """The app with its real outgoing HTTP clients (no test deliverer)."""
    async with (
        container_with(settings, engine, directory, clock) as container,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(container=container)),
            base_url=BASE_URL,
            headers=bearer(container),
        ) as client,
    ):
        yield container, client


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://payer.example.org/hook",  # plain http to a host not on the allow-list
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://0.0.0.0/hook",
        "https://2130706433/hook",  # 127.0.0.1, decimal
        "https://0x7f.1/hook",
        "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "https://10.0.0.7/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://user:pass@payer.example.org/hook",
    ],
)
async def test_endpoints_must_be_https_to_public_hosts(
    api: tuple[Container, httpx.AsyncClient], endpoint: str
) -> None:
    _, client = api
    refused = await client.post("/Subscription", json=subscription(endpoint=endpoint))
    assert refused.status_code == 422, refused.text
    issue = refused.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"], issue


async def test_connect_time_check_stops_names_that_resolve_inward(
    api: tuple[Container, httpx.AsyncClient],
) -> None:
    """`localhost` passes the creation check (a name, https); the connect-time check sees the
    address it resolves to, refuses, and the owner reads a category, not the transport error."""
    _, client = api
    port = free_port()
    made = await client.post(
        "/Subscription", json=subscription(endpoint=f"https://localhost:{port}/hook")
    )
    assert made.status_code == 201, made.text
    stored = (await client.get(f"/Subscription/{made.json()['id']}")).json()
    assert stored["status"] == "error"
    assert stored["error"] == "handshake failed; delivery failed: endpoint not allowed"
