"""What the CLI checks before it starts anything: the mistakes operators make, said in one line.

Each check raises StartupError with a message that names what is wrong and what to do about it;
`reported()` prints it as one line and exits 1, with no traceback unless FHIR_ADAPTER_LOG_LEVEL is
DEBUG (then the original exception is raised, cause and all). Passwords never appear: the store is
described by file path, or by host, port, database and user.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from fhir_adapter.config import Settings

PREFIX = "FHIR_ADAPTER_"
# Variables of ours that are not settings of the service (the test suite's own).
NOT_SETTINGS_PREFIXES = (f"{PREFIX}TEST_",)
DRIVERS = {"sqlite+aiosqlite": "SQLite", "postgresql+asyncpg": "PostgreSQL"}
URL_FORMS = "sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user@host:5432/database"
DATABASE_CHECK_SECONDS = 10.0


_SQLITE_FOLDER = (
    "cannot open {store}: its folder must exist and be writable; fix FHIR_ADAPTER_DATABASE_URL"
)


class StartupError(Exception):
    """A problem the operator can fix; the message is the whole report."""


@contextlib.contextmanager
def reported(environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn a StartupError into `error: <message>` on stderr and exit code 1."""
    try:
        yield
    except StartupError as exc:
        if _log_level(os.environ if environ is None else environ) == "DEBUG":
            raise
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None


def _log_level(environ: Mapping[str, str]) -> str:
    name = f"{PREFIX}LOG_LEVEL"
    level = environ.get(name) or _dotenv().get(name) or ""
    return level.strip().upper()


def _dotenv(path: Path = Path(".env")) -> dict[str, str | None]:
    """The .env file Settings reads (model_config env_file), when there is one."""
    return dict(dotenv_values(path)) if path.is_file() else {}


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Settings(), with an invalid value reported as the variable to fix and why."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            shown = "" if field == "database_url" else f"={error.get('input')!s}"
            problems.append(f"{env_name(field)}{shown}: {_lowercase_first(error['msg'])}")
        raise StartupError(
            f"invalid setting {'; '.join(problems)}; fix it in the environment or .env"
        ) from exc
    if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
        raise StartupError(
            f"invalid setting {env_name('log_level')}={settings.log_level}: use DEBUG, INFO,"
            " WARNING or ERROR; fix it in the environment or .env"
        )
    return settings


def _lowercase_first(message: str) -> str:
    return message[:1].lower() + message[1:]


def misspelled_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per FHIR_ADAPTER_* variable (environment or .env) that is no setting."""
    environ = os.environ if environ is None else environ
    known = sorted(env_name(field) for field in Settings.model_fields)
    names = {n.upper() for n in (*environ, *_dotenv()) if n.upper().startswith(PREFIX)}
    warnings = []
    for name in sorted(names):
        if name in known or name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see Configuration in the README"
        warnings.append(f"{name} is not a setting and is ignored; {hint}")
    return warnings


def database_url(settings: Settings) -> URL:
    """The parsed FHIR_ADAPTER_DATABASE_URL, refused unless its driver is one the store knows."""
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise StartupError(
            f"FHIR_ADAPTER_DATABASE_URL is not a database URL; use {URL_FORMS}"
        ) from exc
    if url.drivername not in DRIVERS:
        close = difflib.get_close_matches(url.drivername, list(DRIVERS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise StartupError(
            f"FHIR_ADAPTER_DATABASE_URL names an unknown database driver '{url.drivername}'"
            f"{hint}; use {URL_FORMS}"
        )
    return url


def describe_store(url: URL) -> str:
    """The store for logs and messages, without secrets: the file, or host, port and database."""
    if url.drivername.startswith("sqlite"):
        where = url.database or ""
        if where in ("", ":memory:"):
            return "SQLite in memory"
        return f"SQLite file {Path(where).resolve()}"
    return (
        f"PostgreSQL database '{url.database}' at {url.host or 'localhost'}:{url.port or 5432}"
        + (f" as user '{url.username}'" if url.username else "")
    )


def check_port(host: str, port: int) -> None:
    """Refuse a port another process listens on, before anything (migrations) is started.

    Binds the way uvicorn will (SO_REUSEADDR), so a port in TIME_WAIT does not count as taken.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} on {host} is already in use (another fhir-adapter?); stop that"
                    f" process or choose another port with FHIR_ADAPTER_PORT"
                ) from exc
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror}); check FHIR_ADAPTER_HOST and"
                f" FHIR_ADAPTER_PORT"
            ) from exc


def check_database(settings: Settings) -> str:
    """Check the driver and connect once, so an unreachable or missing database is one line, not
    a traceback; returns the store's description (for the first log line)."""
    from fhir_adapter.store.engine import create_engine

    url = database_url(settings)
    store = describe_store(url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        # checked here, not by connecting: a failed aiosqlite connect prints a thread traceback
        folder = Path(url.database).resolve().parent
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise StartupError(_SQLITE_FOLDER.format(store=store))

    async def connect() -> None:
        engine = create_engine(settings.database_url)
        try:
            async with asyncio.timeout(DATABASE_CHECK_SECONDS), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(connect())
    except TimeoutError as exc:
        raise StartupError(
            f"no answer from {store} within {DATABASE_CHECK_SECONDS:.0f} s; check the host and"
            f" port in FHIR_ADAPTER_DATABASE_URL and the network"
        ) from exc
    except OSError as exc:  # refused, unknown host, unreachable network
        raise StartupError(
            f"cannot reach {store}: {exc.strerror or exc}; start PostgreSQL there or fix"
            f" FHIR_ADAPTER_DATABASE_URL"
        ) from exc
    except DBAPIError as exc:
        raise StartupError(_database_problem(url, store, exc)) from exc
    return store


def _database_problem(url: URL, store: str, exc: DBAPIError) -> str:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code == "3D000":  # invalid_catalog_name
        return (
            f"{store} does not exist; create it (createdb -h {url.host} -p {url.port or 5432}"
            f" {url.database}) or fix FHIR_ADAPTER_DATABASE_URL"
        )
    if code in ("28000", "28P01"):  # invalid authorization / password
        return f"{store} refused the login; fix the user or password in FHIR_ADAPTER_DATABASE_URL"
    if url.drivername.startswith("sqlite"):
        return f"cannot open {store}: {type(exc.orig).__name__}; fix FHIR_ADAPTER_DATABASE_URL"
    return f"cannot use {store}: {type(exc.orig).__name__}; fix FHIR_ADAPTER_DATABASE_URL"


def unreachable(exc: httpx.TransportError) -> str:
    """The one line for a service that did not answer: which URL, and what to check."""
    return (
        f"cannot reach {exc.request.url} ({type(exc).__name__}); is fhir-adapter serving there?"
        " Pass --url with its FHIR base, or run this where FHIR_ADAPTER_PORT and"
        " FHIR_ADAPTER_BASE_URL match the service"
    )
