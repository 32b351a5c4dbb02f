"""Test doubles: plain objects that behave like the real thing, no mocking of our own modules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class SwitchableTransport(httpx.AsyncBaseTransport):
    """Passes requests to `inner`, or fails them as a down server would while `down` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.delay = 0.0  # seconds before answering: a slow server
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise httpx.ConnectError("directory down (test)", request=request)
        return await self.inner.handle_async_request(request)
