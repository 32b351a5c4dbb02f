"""Search at scale (issue #13): load N second-opinion submissions into PostgreSQL, time searches.

Each submission is what the adapter stores for one request: a ServiceRequest, its Task and the
decision's ClaimResponse, shaped as the write path stores them (captured from a run of the
examples), spread over 200 patients per 1,000 Tasks, the Task statuses and business statuses of a
year of decisions, and a year of lastUpdated instants.

The bulk path (documented in docs/performance-search-scale.md): the schema comes from the
migrations; rows go in with COPY through the store's own driver (asyncpg), built by the store's
own row builders (`_write_version`, `_write_index` of SqlTransaction, or SqlResources once the
store is split into modules; they call
`fhir.search.index_rows`), so they are the rows the write path writes. The secondary indexes are
dropped for the load and rebuilt from tables.py afterwards; the history's foreign key (the
only one left, migration 0010), which holds by construction, is not checked row by row
(session_replication_role = replica).

Then each search runs through the store's search path as the API runs it (parse_search with the
API's limits, a read transaction, `search_guarded`), over varied values, and p50/p95/p99 are
printed per search.

    python benchmarks/search_scale.py --scale 1000000          # load, then measure
    python benchmarks/search_scale.py --scale 1000000 --reuse  # measure what is loaded
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import statistics
import sys
import time
import types
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).parents[1]))

from fhir_adapter.access.guard import UNRESTRICTED
from fhir_adapter.fhir.search import SearchCursor, parse_search
from fhir_adapter.services.access_rules import search_guarded
from fhir_adapter.services.resources import SearchLimits
from fhir_adapter.store.engine import create_engine
from fhir_adapter.store.migrate import upgrade_database
from fhir_adapter.store.resources import SqlResources as RowBuilders  # the store's own row builders
from fhir_adapter.store.sql import SqlResourceStore
from fhir_adapter.store.tables import INDEX_TABLES, resource_versions, resources

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/fhir_scale"
BASE_URL = "http://localhost:8000/fhir"
START = datetime(2025, 12, 1, tzinfo=UTC)
YEAR_SECONDS = 365 * 24 * 3600
BATCH = 5_000  # submissions per COPY round

# (Task.status, businessStatus, ClaimResponse reviewAction, share): a year of decisions.
OUTCOMES = [
    ("accepted", "approved-in-network", "NA", 40),
    ("completed", "completed", "NA", 20),
    ("accepted", "approved-out-of-network", "A1", 10),
    ("rejected", "denied", "A3", 15),
    ("on-hold", "pending-review", "A4", 6),
    ("on-hold", "pending-directory", "A4", 2),
    ("cancelled", "cancelled", "A4", 3),
    ("received", "received", "A4", 4),
]
_WEIGHTED = [o for o in OUTCOMES for _ in range(o[3])]
SOS = "https://fhir-adapter.org/fhir/CodeSystem/second-opinion-status"


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def submission(n: int, patients: int, rng: random.Random) -> list[dict[str, Any]]:
    """The ServiceRequest, Task and ClaimResponse of submission `n` (contents without meta)."""
    patient = f"Patient/p{rng.randrange(patients)}"
    status, business, action, _ = rng.choice(_WEIGHTED)
    sr_id, task_id, cr_id = (str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3))
    return [
        _service_request(sr_id, n, patient),
        _task(task_id, n, patient, sr_id, cr_id, status, business),
        _claim_response(cr_id, task_id, n, patient, action),
    ]


def _service_request(id: str, n: int, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": id,
        "identifier": [{"system": "https://ehr.example.org/second-opinion-request", "value": f"SOR-{n}"}],
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "category": [{"coding": [{"system": "https://fhir-adapter.org/fhir/CodeSystem/second-opinion", "code": "second-opinion", "display": "Second medical opinion"}]}],
        "code": {"coding": [{"system": "https://codesystem.x12.org/005010/1365", "code": "3", "display": "Consultation"}], "text": "Second medical opinion"},
        "subject": _ref(patient),
        "insurance": [_ref(f"Coverage/cov-{patient[8:]}")],
        "authoredOn": "2026-11-25T09:30:00-08:00",
        "requester": _ref(f"PractitionerRole/role-{n % 5000}"),
        "reasonCode": [{"coding": [{"system": "https://fhir-adapter.org/fhir/CodeSystem/second-opinion-reason", "code": "questioned-surgery"}]}],
        "reasonReference": [_ref(f"Condition/cond-{n}")],
        "extension": [{"url": "https://fhir-adapter.org/fhir/StructureDefinition/initial-opinion-provider", "valueReference": _ref(f"PractitionerRole/role-{(n * 7) % 5000}")}],
    }  # fmt: skip


# long-function: one literal resource, as the adapter stores it
def _task(
    id: str, n: int, patient: str, sr: str, cr: str, status: str, business: str
) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": id,
        "identifier": [{"system": "https://ehr.example.org/second-opinion-task", "value": f"SOT-{n}"}],
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": _ref(f"ServiceRequest/{sr}"),
        "for": _ref(patient),
        "requester": _ref(f"PractitionerRole/role-{n % 5000}"),
        "authoredOn": "2026-11-25T09:30:00-08:00",
        "priority": "routine",
        "businessStatus": {"coding": [{"system": SOS, "code": business}], "text": business.replace("-", " ")},
        "lastModified": "2026-11-25T18:00:00.000Z",
        "executionPeriod": {"start": "2026-11-25T18:00:00.000Z"},
        "restriction": {"period": {"start": "2026-11-25T18:00:00.000Z", "end": "2026-12-02T18:00:00.000Z"}},
        "owner": _ref("Organization/demo-plan"),
        "output": [{"type": {"coding": [{"system": SOS, "code": "decision"}], "text": "decision"}, "valueReference": _ref(f"ClaimResponse/{cr}")}],
    }  # fmt: skip


_RULE = "https://fhir-adapter.org/fhir/StructureDefinition/decision-rule"
_RULES = [
    {"url": _RULE, "extension": [{"url": "rule", "valueString": rule}, {"url": "basis", "valueString": "HSC 1383.15; policy"}, {"url": "result", "valueCode": "passed"}]}
    for rule in ("coverage_is_active", "coverage_is_with_the_plan", "requester_is_member_or_treating_professional", "directory_answered", "requesting_professional_participates", "reason_is_listed", "specialty_is_known")
]  # fmt: skip
_PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


def _claim_response(id: str, task: str, n: int, patient: str, action: str) -> dict[str, Any]:
    return {
        "resourceType": "ClaimResponse",
        "id": id,
        "extension": _RULES,
        "identifier": [{"system": "urn:trnorg:fhir-adapter", "value": task}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "preauthorization",
        "patient": _ref(patient),
        "created": "2026-11-25T18:00:00.000Z",
        "insurer": _ref("Organization/demo-plan"),
        "request": _ref(f"Claim/claim-{n}"),
        "outcome": "complete",
        "disposition": "Approved: no authorization is needed for a qualified in-network provider; 2 qualified provider(s) listed.",
        "item": [{"itemSequence": 1, "adjudication": [{"category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted"}]}, "extension": [{"url": _PAS + "extension-reviewAction", "extension": [{"url": _PAS + "extension-reviewActionCode", "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/306", "code": action}]}}, {"url": "number", "valueString": f"SMO-{n:012d}"}]}]}]}],
        "requestor": _ref(f"PractitionerRole/role-{n % 5000}"),
        "processNote": [{"number": 1, "type": "display", "text": "Dr. Rosa Garcia: Valley Medical Group; Los Angeles, CA; phone 555-0100"}],
    }  # fmt: skip


# -- the bulk load -------------------------------------------------------------------------------

LOADED_TABLES: tuple[Table, ...] = (resources, resource_versions, *INDEX_TABLES)


async def batch_rows(
    first_pk: int, first: int, count: int, scale: int, patients: int, rng: random.Random
) -> dict[Table, list[tuple[Any, ...]]]:
    """The rows of submissions first..first+count, built by the store's own row builders."""
    builder: Any = types.SimpleNamespace(
        base_url=BASE_URL, _versions=[], _index={table: [] for table in INDEX_TABLES}
    )
    rows: dict[Table, list[tuple[Any, ...]]] = {table: [] for table in LOADED_TABLES}
    pk = first_pk
    for n in range(first, first + count):
        submitted = START + timedelta(seconds=YEAR_SECONDS * n / scale)
        for content in submission(n, patients, rng):
            pk += 1
            updated = submitted
            if content["resourceType"] != "ServiceRequest":  # decided up to a week later
                updated += timedelta(seconds=rng.randrange(7 * 24 * 3600))
            content["meta"] = {"versionId": "1", "lastUpdated": updated.isoformat()}
            rows[resources].append(
                (
                    pk,
                    content["resourceType"],
                    content["id"],
                    1,
                    updated,
                    orjson.dumps(content).decode(),
                )
            )
            for written in (
                RowBuilders._write_version(builder, pk, 1, updated, "create", content),
                RowBuilders._write_index(builder, pk, content),
            ):
                if inspect.isawaitable(written):  # async on SqlTransaction, plain on SqlResources
                    await written
    for row in builder._versions:
        row["content"] = orjson.dumps(row["content"]).decode()
    for table, dicts in [(resource_versions, builder._versions), *builder._index.items()]:
        columns = list(table.c.keys())
        rows[table] = [tuple(d[c] for c in columns) for d in dicts]
    return rows


def build_batch(
    first_pk: int, first: int, count: int, scale: int, patients: int
) -> dict[Table, list[tuple[Any, ...]]]:
    """batch_rows in a worker process, seeded by the batch so that a load is reproducible."""
    return asyncio.run(batch_rows(first_pk, first, count, scale, patients, random.Random(first)))


async def load(engine: AsyncEngine, scale: int, patients: int) -> float:
    """Empty the resource tables and COPY `scale` submissions in; the seconds it took."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        names = ", ".join(t.name for t in LOADED_TABLES)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        for table in LOADED_TABLES:
            for index in table.indexes:
                await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    loop = asyncio.get_running_loop()
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("SET session_replication_role = replica")
        # Two processes build the next batches' rows while this one COPYs the last batch's.
        with ProcessPoolExecutor(2) as builder:
            starts = list(range(0, scale, BATCH))
            build = [
                (3 * first, first, min(BATCH, scale - first), scale, patients) for first in starts
            ]
            pending = deque(loop.run_in_executor(builder, build_batch, *b) for b in build[:2])
            for i, first in enumerate(starts):
                rows = await pending.popleft()
                if i + 2 < len(build):
                    pending.append(loop.run_in_executor(builder, build_batch, *build[i + 2]))
                for table, records in rows.items():
                    await raw.copy_records_to_table(
                        table.name, records=records, columns=list(table.c.keys())
                    )
                if i % 20 == 0:
                    print(
                        f"  {first + BATCH:,} submissions in {time.perf_counter() - started:.0f} s",
                        flush=True,
                    )
        pk = 3 * scale
        await raw.execute("RESET session_replication_role")
        await conn.commit()
    copied = time.perf_counter() - started
    await rebuild_indexes(engine, pk)
    print(
        f"loaded {scale:,} submissions: COPY {copied:.0f} s, total {time.perf_counter() - started:.0f} s"
    )
    return time.perf_counter() - started


async def rebuild_indexes(engine: AsyncEngine, last_pk: int) -> None:
    """Build tables.py's indexes again, move the key sequence on, VACUUM ANALYZE."""
    async with engine.begin() as conn:
        await conn.execute(text("SET maintenance_work_mem = '512MB'"))
        for table in LOADED_TABLES:
            for index in table.indexes:
                started = time.perf_counter()
                await conn.run_sync(lambda sync, index=index: index.create(sync))
                print(f"  index {index.name}: {time.perf_counter() - started:.0f} s")
        await conn.execute(
            text("SELECT setval(pg_get_serial_sequence('resources', 'pk'), :pk)"), {"pk": last_pk}
        )
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        for table in LOADED_TABLES:
            await conn.execute(text(f"VACUUM ANALYZE {table.name}"))


async def ensure_database(url: str) -> None:
    admin = create_async_engine(
        make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    name = make_url(url).database
    try:
        async with admin.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if not found:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


async def loaded(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = (
            select(func.count()).select_from(resources).where(resources.c.resource_type == "Task")
        )
        return int(await conn.scalar(count) or 0)


# -- the searches --------------------------------------------------------------------------------

LIMITS = SearchLimits()


async def search(store: SqlResourceStore, resource_type: str, query_string: str) -> Any:
    """One search as the API runs it: the query string parsed with the API's limits, then the
    store's search in a read transaction."""
    query = parse_search(
        resource_type,
        parse_qsl(query_string, keep_blank_values=True),
        base_url=BASE_URL,
        default_count=LIMITS.default_count,
        max_count=LIMITS.max_count,
    )
    async with store.transaction(write=False) as tx:
        return await search_guarded(tx, query, UNRESTRICTED)


async def page_cursor(store: SqlResourceStore, query_string: str, page: int) -> SearchCursor:
    """The `_cursor` of page `page` of a search, found by following the pages before it (it
    carries the total the first page counted, as the API's next links do)."""
    cursor: SearchCursor | None = None
    for _ in range(page - 1):
        suffix = f"&_cursor={cursor}" if cursor is not None else ""
        result = await search(store, "Task", query_string + suffix)
        cursor = result.next_cursor
        assert cursor is not None, f"{query_string} has fewer than {page} pages"
    assert cursor is not None, "page 1 has no cursor"
    return cursor


async def queries(
    store: SqlResourceStore, scale: int, patients: int, runs: int
) -> dict[str, list[tuple[str, str]]]:
    """Each measured search, with `runs` varied (resource type, query string) pairs."""
    rng = random.Random(31)
    statuses = sorted({o[0] for o in OUTCOMES})
    business = sorted({o[1] for o in OUTCOMES})
    large = ["accepted", "completed", "rejected"]
    cursors = {s: await page_cursor(store, f"status={s}&_count=50", 20) for s in large}
    return {
        "Task?status=…&_count=50": [
            ("Task", f"status={statuses[i % len(statuses)]}&_count=50") for i in range(runs)
        ],
        "Task?patient=…": [
            ("Task", f"patient=Patient/p{rng.randrange(patients)}") for _ in range(runs)
        ],
        "Task?business-status=…&_sort=-_lastUpdated": [
            ("Task", f"business-status={SOS}|{business[i % len(business)]}&_sort=-_lastUpdated")
            for i in range(runs)
        ],
        "ClaimResponse?request=…": [
            ("ClaimResponse", f"request=Claim/claim-{rng.randrange(scale)}") for _ in range(runs)
        ],
        "Task?status=…&_count=50, page 20": [
            ("Task", f"status={s}&_count=50&_cursor={cursors[s]}")
            for s in (large[i % len(large)] for i in range(runs))
        ],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    store: SqlResourceStore, scale: int, patients: int, runs: int, accurate_runs: int
) -> None:
    """p50/p95/p99 of each search; `estimated` is how many of its answers carried an estimated
    total (the default `_total=estimate` past EXACT_UP_TO matches)."""
    plan = await queries(store, scale, patients, runs)
    if accurate_runs:  # for reference, not a target: what `_total=accurate` costs
        plan["Task?status=…&_count=50&_total=accurate"] = [
            (t, f"{q}&_total=accurate") for t, q in plan["Task?status=…&_count=50"][:accurate_runs]
        ]
    print(f"\n{'search':<46} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'matches':>9} estimated")
    for name, searches in plan.items():
        for resource_type, query_string in searches[: min(10, len(searches))]:  # warm-up
            await search(store, resource_type, query_string)
        timings, matched, estimated = [], [], 0
        for resource_type, query_string in searches:
            started = time.perf_counter()
            page = await search(store, resource_type, query_string)
            timings.append((time.perf_counter() - started) * 1000)
            matched.append(page.total)
            estimated += page.total_estimated
        print(
            f"{name:<46} {percentile(timings, 50):8.1f} {percentile(timings, 95):8.1f} "
            f"{percentile(timings, 99):8.1f} {statistics.median(matched):9,.0f} "
            f"{estimated}/{len(searches)}",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="Tasks (submissions)")
    parser.add_argument("--patients", type=int, help="distinct patients (default scale / 5)")
    parser.add_argument("--reuse", action="store_true", help="skip the load if already loaded")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per search (>= 100)")
    parser.add_argument("--url", default=DEFAULT_URL, help="a database of its own (created)")
    parser.add_argument(
        "--accurate-runs", type=int, default=21, help="runs of _total=accurate (0: none)"
    )
    args = parser.parse_args()
    patients = args.patients or max(1, args.scale // 5)
    await ensure_database(args.url)
    engine = create_engine(args.url)
    try:
        await upgrade_database(engine)
        have = await loaded(engine)
        if args.reuse and have == args.scale:
            print(f"reusing {have:,} loaded Tasks")
        else:
            await load(engine, args.scale, patients)
        store = SqlResourceStore(engine, base_url=BASE_URL)
        await measure(store, args.scale, patients, args.runs, args.accurate_runs)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
