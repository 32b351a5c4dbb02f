"""Per-client request limits (the `limits` library, sliding window counter, in this process's
memory).

A sliding window counter costs the same at any limit: two counters per key, the previous
window's weighted by how much of it still overlaps. The moving window kept one entry per request
and shifted that list on every hit, so a high limit made every request dearer (issue #18).

Each process counts on its own: behind N processes a client gets up to N times the limit. That
bounds a runaway client cheaply; a shared limit would need a shared store such as Redis.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from fhir_adapter.errors import TooManyRequestsError


class RateLimiter:
    def __init__(self, limit: str) -> None:
        """`limit` in the library's notation, e.g. "600/minute"; "off" (or empty) turns it off."""
        off = limit.strip().lower() in ("", "off")
        self.item: RateLimitItem | None = None if off else parse(limit)
        self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def check(self, key: str, *, cost: int = 1) -> None:
        """Count `cost` requests for `key`; 429 with Retry-After once the window is full."""
        if self.item is None or cost < 1:
            return
        if await self.limiter.hit(self.item, key, cost=cost):
            return
        stats = await self.limiter.get_window_stats(self.item, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequestsError(
            f"Too many requests: the limit is {self.item}; try again in {retry_after} s",
            retry_after=retry_after,
        )
