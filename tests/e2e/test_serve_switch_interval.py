"""`fhir-adapter serve` on SQLite shortens CPython's GIL switch interval: aiosqlite answers each
statement from a thread of its own, and a busy event loop would keep that thread waiting for the
GIL for 5 ms a hop while SQLite's one writer holds everyone up (issue #13). PostgreSQL's driver
has no such thread, so its processes keep the interpreter's default."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import pytest

from fhir_adapter import server
from tests.e2e.test_live_server import free_port


def interval_when_serving(database_url: str, monkeypatch: pytest.MonkeyPatch) -> float:
    """The switch interval `serve` leaves for uvicorn to run with (uvicorn itself not started)."""
    seen: dict[str, Any] = {}

    def run_nothing(app: Any, settings: Any, **options: Any) -> None:
        seen["interval"] = sys.getswitchinterval()

    for name in [n for n in os.environ if n.startswith("FHIR_ADAPTER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FHIR_ADAPTER_DATABASE_URL", database_url)
    monkeypatch.setenv("FHIR_ADAPTER_HOST", "127.0.0.1")
    monkeypatch.setenv("FHIR_ADAPTER_PORT", str(free_port()))
    monkeypatch.setattr(server, "_run", run_nothing)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # leave the test runner's handlers
    before = sys.getswitchinterval()
    try:
        server.serve()
    finally:
        sys.setswitchinterval(before)
    return float(seen["interval"])


def test_serving_sqlite_hands_the_gil_over_sooner(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = interval_when_serving(database_url, monkeypatch)

    if database_url.startswith("sqlite"):
        assert interval == server.SQLITE_SWITCH_INTERVAL_SECONDS
        assert interval < 0.005  # CPython's default
    else:
        assert interval == sys.getswitchinterval()  # the interpreter's own, untouched
