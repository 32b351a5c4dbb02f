"""An httpx client for rest-hook notifications that only connects to public addresses
(issue #16, SSRF): the host is resolved at connect time and every address it resolves to is
checked, and the connection goes to the checked address, so a DNS answer that changes between
the check and the connect (rebinding) cannot reach loopback, private or link-local hosts. Hosts on
FHIR_ADAPTER_SUBSCRIPTION_ALLOWED_HOSTS are exempt."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from fhir_adapter.workflow.subscriptions import host_allowed, is_public_address


class BlockedAddressError(httpcore.ConnectError):
    """The endpoint resolves to an address notifications may not reach."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self.allowed = allowed_hosts
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host_allowed(host, port, self.allowed):
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host.strip("[]"), port, type=socket.SOCK_STREAM
            )
        except OSError:
            raise httpcore.ConnectError("the endpoint's host name does not resolve") from None
        addresses = [str(info[4][0]) for info in found]
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise BlockedAddressError("the endpoint resolves to a non-public address")
        return await self.inner.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are not notification endpoints")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def public_only_client(allowed_hosts: frozenset[str], *, timeout: float) -> httpx.AsyncClient:
    """No proxies from the environment (they would connect for us, unchecked), no redirects."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx has no public hook for the network backend; the pool is rebuilt with ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=PublicOnlyBackend(allowed_hosts),
    )
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )


def failure_category(exc: httpx.HTTPError) -> str:
    """What the owner of a Subscription is told: a category, never the transport's message
    (which tells open ports from closed ones)."""
    if isinstance(exc.__cause__, BlockedAddressError):
        return "delivery failed: endpoint not allowed"
    if isinstance(exc, httpx.TimeoutException):
        return "delivery failed: timeout"
    return "delivery failed: network error"
