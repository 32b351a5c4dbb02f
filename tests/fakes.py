"""Test doubles: plain objects that behave like the real thing, no mocking of our own modules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
