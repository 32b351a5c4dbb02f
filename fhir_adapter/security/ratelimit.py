"""Per-client request limits (the `limits` library, sliding window counter).

A sliding window counter costs the same at any limit: two counters per key, the previous
window's weighted by how much of it still overlaps. The moving window kept one entry per request
and shifted that list on every hit, so a high limit made every request dearer (issue #18).

Where the counters live (issue #13, docs/observability.md):
- FHIR_ADAPTER_REDIS_URL unset: in this process's memory. Behind N processes a client gets up to
  N times the limit; that still bounds a runaway client cheaply.
- FHIR_ADAPTER_REDIS_URL set: in Redis, shared by every process and instance, so the limit is
  one limit. The library updates a window with one Lua script, atomic in Redis.

Redis unreachable or slow (over REDIS_TIMEOUT_SECONDS): the check falls back to this process's
counters for FALLBACK_SECONDS, with a WARNING (at most one a minute) and
`fhir_adapter_rate_limit_store_errors_total`, then tries Redis again. Neither fail open (no limit
at all, exactly when something is wrong) nor fail closed (a cache outage would refuse every
submission and read of a service with regulatory deadlines): per-process limits are the same
bound the service has without Redis.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from fhir_adapter import telemetry
from fhir_adapter.errors import TooManyRequestsError

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.25
FALLBACK_SECONDS = 5.0
WARN_EVERY_SECONDS = 60.0
KEY_PREFIX = "fhir_adapter_rate"


class RateLimiter:
    def __init__(self, limit: str, *, redis_url: str | None = None) -> None:
        """`limit` in the library's notation, e.g. "600/minute"; "off" (or empty) turns it off.
        `redis_url` (redis://host:port/db): counters shared through Redis."""
        off = limit.strip().lower() in ("", "off")
        self.item: RateLimitItem | None = None if off else parse(limit)
        self.local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self.shared: SlidingWindowCounterRateLimiter | None = None
        self._storage: Storage | None = None
        if redis_url and not off:
            self._storage = _redis_storage(redis_url)
            self.shared = SlidingWindowCounterRateLimiter(self._storage)
        self._fallback_until = 0.0
        self._warned_at = -math.inf

    async def check(self, key: str, *, cost: int = 1) -> None:
        """Count `cost` requests for `key`; 429 with Retry-After once the window is full."""
        if self.item is None or cost < 1:
            return
        limiter = self._limiter()
        try:
            if await limiter.hit(self.item, key, cost=cost):
                return
            stats = await limiter.get_window_stats(self.item, key)
        except Exception as exc:  # only the shared store raises; memory does not
            if limiter is self.local:
                raise
            self._store_failed(exc)
            await self.check(key, cost=cost)
            return
        telemetry.RATE_LIMIT_REFUSED.inc()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequestsError(
            f"Too many requests: the limit is {self.item}; try again in {retry_after} s",
            retry_after=retry_after,
        )

    def _limiter(self) -> SlidingWindowCounterRateLimiter:
        if self.shared is None or time.monotonic() < self._fallback_until:
            return self.local
        return self.shared

    def _store_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._fallback_until = now + FALLBACK_SECONDS
        telemetry.RATE_LIMIT_STORE_ERRORS.inc()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "rate limits: Redis did not answer (%s); counting in this process for now",
                type(exc).__name__,
            )

    async def aclose(self) -> None:
        """Close the Redis connections, if any."""
        storage = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(storage, "aclose", None)
        if close is not None:
            await close()


def _redis_storage(url: str) -> Storage:
    from limits.aio.storage import RedisStorage

    return RedisStorage(
        url if url.startswith("async+") else f"async+{url}",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
