"""Issue #18: the read path. A removed client's cached tokens are refused by every app instance
on the database within the client-check bound; the common searches and the read by id use the
tables' indexes on PostgreSQL; a read by id is one statement (on PostgreSQL no BEGIN, COMMIT or
ping around it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.api.app import create_app
from fhir_adapter.api.fhir_http import FhirResponse
from fhir_adapter.bootstrap import Container, build_container
from fhir_adapter.config import Settings
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.security.issuer import RegisteredClients
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL
from tests.fakes import FrozenClock
from tests.sql_sent import first_word, sql_sent
from tests.tokens import fetch_token, register


class Monotonic:
    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


@asynccontextmanager
async def instance(
    settings: Settings, engine: AsyncEngine, directory: DirectoryClient, clock: FrozenClock
) -> AsyncIterator[tuple[Container, httpx.AsyncClient]]:
    """One app instance (its own container, caches and engine) on the shared database."""
    container = await build_container(
        settings,
        store=SqlResourceStore(engine, base_url=settings.fhir_base_url),
        directory=directory,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=create_app(container=container))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield container, http
    finally:
        await container.aclose()


async def test_a_removed_client_is_refused_by_every_instance_within_the_bound(
    settings: Settings,
    engine: AsyncEngine,
    database_url: str,
    directory: DirectoryClient,
    clock: FrozenClock,
) -> None:
    assert settings.auth_client_check_seconds == 30  # the stated bound (docs/security.md)
    other_engine = create_engine(database_url)
    monotonic = Monotonic()
    try:
        async with (
            instance(settings, engine, directory, clock) as (first, one),
            instance(settings, other_engine, directory, clock) as (second, two),
        ):
            for container in (first, second):
                assert isinstance(container.tokens.registered, RegisteredClients)
                container.tokens.registered.now = monotonic
            credentials = await register(first.store, "system/Task.rs")
            assert first.issuer is not None
            token = await fetch_token(
                one, first.issuer.urls.token_endpoint, credentials, "system/Task.rs"
            )
            headers = {"authorization": f"Bearer {token}"}
            for http in (one, two):  # both instances now hold the token as checked
                for _ in range(2):
                    assert (await http.get("/Task", headers=headers)).status_code == 200
            async with first.store.transaction() as tx:  # `clients remove`, anywhere
                assert await tx.auth.remove_client(credentials.client_id)
            monotonic.at += 30.0
            for http in (one, two):
                refused = await http.get("/Task", headers=headers)
                assert refused.status_code == 401, refused.text
                assert "no longer registered" in refused.text
    finally:
        await other_engine.dispose()


# -- EXPLAIN: the common searches use indexes ---------------------------------------------------


def task(n: int, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": ["requested", "in-progress", "completed"][n % 3],
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
    }


def claim_response(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {"coding": [{"code": "professional"}]},
        "use": "preauthorization",
        "patient": {"reference": f"Patient/{patient}"},
        "created": "2026-11-25",
        "insurer": {"reference": "Organization/plan"},
        "outcome": "complete",
    }


@pytest.mark.postgres
async def test_the_common_reads_use_their_indexes(postgres_database_url: str) -> None:
    engine = create_engine(postgres_database_url)
    await upgrade_database(engine)
    store = SqlResourceStore(engine)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        async with store.transaction() as tx:
            for n in range(600):
                now = start + timedelta(minutes=n)
                await tx.resources.insert({**task(n, f"p{n % 50}"), "id": f"t{n}"}, now=now)
                await tx.resources.insert({**claim_response(f"p{n % 50}"), "id": f"c{n}"}, now=now)
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        plans = await explain_each(
            engine,
            store,
            [
                ("Task", [("patient", "p7")]),
                ("ClaimResponse", [("patient", "p7"), ("_lastUpdated", "gt2026-11-01T05:00:00Z")]),
                ("Task", [("status", "completed")]),
                ("Task", [("_count", "50")]),
            ],
        )
    finally:
        await engine.dispose()
    assert len(plans) >= 5, plans  # a read, then each search (a first page counts in it)
    for statement, plan in plans:
        assert "Seq Scan" not in plan, f"{statement}\n{plan}"
        assert "Index" in plan, f"{statement}\n{plan}"


async def explain_each(
    engine: AsyncEngine, store: SqlResourceStore, searches: list[tuple[str, list[Any]]]
) -> list[tuple[str, str]]:
    """Run a read by id and the searches through the store, then EXPLAIN each SQL statement they
    sent, with its parameters, with sequential scans priced out (so an index that can serve the
    query is used; one that cannot leaves a Seq Scan in the plan)."""
    from fhir_adapter.fhir.search import parse_search

    engines = [engine, *([store.read_engine] if store.read_engine else [])]
    with sql_sent(engines) as sent:
        async with store.transaction(write=False) as tx:
            assert await tx.resources.read("Task", "t7") is not None
            for resource_type, params in searches:
                query = parse_search(
                    resource_type, params, base_url=None, default_count=50, max_count=100
                )
                assert (await tx.resources.search(query)).matches
    selects = [(s, p) for s, p in sent if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 + len(searches)  # the read's and each search's, by either path
    plans = []
    async with engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        for statement, parameters in selects:
            rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plans.append((statement, "\n".join(row[0] for row in rows)))
    return plans


# -- One statement: a read by id sends its SELECT and nothing else ------------------------------


@contextmanager
def statements_sent(engine: AsyncEngine, container: Container) -> Iterator[list[str]]:
    """What reaches the database while inside, by its first word, on the store's engine and
    its read engine."""
    assert isinstance(container.store, SqlResourceStore)
    # PostgreSQL reads have their own engine, AUTOCOMMIT from the start (store/engine.py)
    reads = container.store.read_engine
    assert (reads is not None) == (engine.dialect.name == "postgresql")
    with sql_sent([engine] if reads is None else [engine, reads], first_word) as sent:
        yield sent


def only_selects(engine: AsyncEngine, statements: list[str]) -> list[str]:
    """On PostgreSQL reads send no BEGIN, COMMIT or ping; SQLite reads in its own BEGIN ...
    COMMIT, which cost no round trip in process."""
    if engine.dialect.name == "postgresql":
        return statements
    return [s for s in statements if s not in ("BEGIN", "COMMIT")]


async def test_a_read_by_id_is_one_statement(
    engine: AsyncEngine, container: Container, client: httpx.AsyncClient
) -> None:
    async with container.store.transaction() as tx:
        await tx.resources.insert({**task(1, "p1"), "id": "t1"}, now=datetime.now(UTC))
    with statements_sent(engine, container) as sent:
        read = await client.get("/Task/t1")
        statements = list(sent)
        sent.clear()
        async with container.store.transaction() as tx:  # the instrument sees a transaction
            await tx.resources.read("Task", "t1")
        assert read.status_code == 200, read.text
        assert "BEGIN" in sent, sent
    assert only_selects(engine, statements) == ["SELECT"]


async def test_a_page_of_a_whole_type_is_one_statement_spliced_from_the_stored_json(
    engine: AsyncEngine, container: Container, client: httpx.AsyncClient
) -> None:
    """Issue #18: a page counts its matches in its own statement, a whole type's too, and its
    entries (and a read, a version read, a history) are the stored JSON as it was stored, never
    decoded and encoded again."""
    async with container.store.transaction() as tx:
        for n in range(3):
            content = {**task(n, f"p{n}"), "id": f"w{n}", "note": [{"text": '1.50 \u00e9 "'}]}
            await tx.resources.insert(content, now=datetime.now(UTC))
    # w1 as another writer might have stored it (indented): the answer carries it as it is
    as_text = "SELECT id, CAST(content AS TEXT) FROM resources"
    json_type = "json" if engine.dialect.name == "postgresql" else "text"
    async with engine.begin() as conn:
        compact = dict((await conn.execute(text(as_text))).all())
        await conn.execute(
            text(f"UPDATE resources SET content = CAST(:c AS {json_type}) WHERE id = 'w1'"),
            {"c": json.dumps(json.loads(compact["w1"]), indent=1)},
        )
        stored_text = {id: body.encode() for id, body in await conn.execute(text(as_text))}
    assert b"\n" in stored_text["w1"] and b"\n" not in stored_text["w0"]
    with statements_sent(engine, container) as sent:
        page = await client.get("/Task?_count=2")
        statements = list(sent)
    assert page.status_code == 200, page.text
    assert only_selects(engine, statements) == ["SELECT"]  # the count is in the page's statement
    bundle = page.json()
    assert bundle["total"] == 3
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["w0", "w1"]
    for entry in bundle["entry"]:
        assert stored_text[entry["resource"]["id"]] in page.content  # spliced byte for byte
        assert entry["resource"]["note"] == [{"text": '1.50 \u00e9 "'}]
    read = await client.get("/Task/w1")
    assert read.content == stored_text["w1"]
    # a version read and the history splice theirs too: w2's first version stored indented
    version_of_w2 = (
        "FROM resource_versions v JOIN resources r ON r.pk = v.resource_pk WHERE r.id = 'w2'"
    )
    async with engine.begin() as conn:
        compact_version = (
            await conn.execute(text(f"SELECT CAST(v.content AS TEXT) {version_of_w2}"))
        ).scalar_one()
        await conn.execute(
            text(
                f"UPDATE resource_versions SET content = CAST(:c AS {json_type}) "
                "WHERE resource_pk = (SELECT pk FROM resources WHERE id = 'w2')"
            ),
            {"c": json.dumps(json.loads(compact_version), indent=1)},
        )
        version_text = (
            await conn.execute(text(f"SELECT CAST(v.content AS TEXT) {version_of_w2}"))
        ).scalar_one()
    assert "\n" in version_text
    assert (await client.get("/Task/w2/_history/1")).content == version_text.encode()
    assert version_text.encode() in (await client.get("/Task/w2/_history")).content
    pretty = await client.get("/Task?_count=2&_pretty=true")  # indented throughout
    assert pretty.json() == bundle
    assert b'\n        "resourceType": "Task",\n' in pretty.content


@pytest.mark.parametrize(
    ("content", "status", "pretty", "body"),
    [
        ({"resourceType": "Task", "id": "t1"}, 200, False, b'{"resourceType":"Task","id":"t1"}'),
        ({"id": "t1"}, 200, True, b'{\n  "id": "t1"\n}'),
        (None, 201, False, b""),
    ],
)
def test_a_fhir_answer_carries_each_header_once(
    content: Any, status: int, pretty: bool, body: bytes
) -> None:
    """The body is rendered before the headers are built (issue #18), and they come out as they
    did when they were edited after: the caller's, then the length and the FHIR media type."""
    answer = FhirResponse(content, status, {"ETag": 'W/"1"'}, pretty=pretty)
    assert answer.body == body
    assert answer.raw_headers == [
        (b"etag", b'W/"1"'),
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/fhir+json; charset=utf-8"),
    ]


# -- A recent estimate: a large total is not counted again for ESTIMATE_SECONDS ----------------


@pytest.mark.postgres
async def test_a_recent_estimate_is_answered_without_counting_again(
    postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_adapter.fhir.search import parse_search
    from fhir_adapter.store import search_sql

    engine = create_engine(postgres_database_url)
    await upgrade_database(engine)
    store = SqlResourceStore(engine)
    assert store.read_engine is not None
    sent: list[str] = []

    async def search(name: str) -> Any:
        sent.clear()
        params = [("name", name), ("_count", "10")]
        query = parse_search("Organization", params, base_url=None, default_count=50, max_count=100)
        async with store.transaction(write=False) as tx:
            return await tx.resources.search(query)

    try:
        async with store.transaction() as tx:
            for n in range(search_sql.EXACT_UP_TO + 5):
                organization = {"resourceType": "Organization", "name": "Estimated"}
                await tx.resources.insert({**organization, "id": f"est{n}"}, now=datetime.now(UTC))
            await tx.resources.insert(
                {"resourceType": "Organization", "id": "few", "name": "Few"}, now=datetime.now(UTC)
            )
        with sql_sent([store.read_engine], first_word) as sent:
            first = await search("estimated")
            assert first.total_estimated and first.total > search_sql.EXACT_UP_TO
            assert "EXPLAIN" in sent, sent  # counted up to the cap, then asked the planner
            again = await search("estimated")
            assert sent == ["SELECT"]  # the page alone: no count, no EXPLAIN
            assert (again.total, again.total_estimated) == (first.total, True)
            assert again.next_cursor is not None
            assert (again.next_cursor.total, again.next_cursor.estimated) == (first.total, True)
            few = await search("few")  # another search is counted, exactly
            assert (few.total, few.total_estimated) == (1, False)
            monkeypatch.setattr(search_sql, "ESTIMATE_SECONDS", 0.0)
            await search("estimated")
            assert "EXPLAIN" in sent, sent  # an older estimate is asked for again
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_read_pool_is_autocommit_and_goes_with_its_engine(
    postgres_database_url: str,
) -> None:
    """PostgreSQL reads use a second engine, AUTOCOMMIT from the start and bounded (the two
    pools split the one pool of before); disposing the store's engine closes its connections."""
    from fhir_adapter.store.engine import READ_POOL, WRITE_POOL

    engine = create_engine(postgres_database_url)
    await upgrade_database(engine)
    store = SqlResourceStore(engine)
    reads = store.read_engine
    assert reads is not None and SqlResourceStore(engine).read_engine is reads  # one per engine
    assert sum(READ_POOL) + sum(WRITE_POOL) == 20
    async with store.transaction(write=False) as tx:
        assert await tx.resources.read("Task", "no-such-task") is None
        raw = await tx.db.conn.get_raw_connection()
        assert raw.dbapi_connection.autocommit  # the driver sends no BEGIN
    pool = reads.sync_engine.pool
    try:
        assert pool.checkedin() == 1
    finally:
        await engine.dispose()
    assert pool.checkedin() == 0  # closed with the engine it reads for
