"""Issue #18: searches of one shape share one statement, each with its own values
(store/search_filters.py); issue #13: so do the batched matches of conditional creates
(store/resources.py `matches`). Searches of the same shapes one after another, on every store,
each find their own matches: no value of an earlier search is left in the shared statement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.ports.store import ResourceStore
from fhir_adapter.store.search_filters import query_shape
from tests.conftest import BASE_URL

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def task(id: str, patient: str, status: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": id,
        "status": status,
        "intent": "order",
        "for": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": "http://example.org/codes", "code": code}]},
    }


async def ids(store: ResourceStore, resource_type: str, *params: tuple[str, str]) -> list[str]:
    query = parse_search(resource_type, params, base_url=BASE_URL, default_count=50, max_count=50)
    async with store.transaction(write=False) as tx:
        page = await tx.resources.search(query)
    return sorted(m.id for m in page.matches)


async def seed(store: ResourceStore, *also: dict[str, Any]) -> None:
    """Tasks t0 (p1, requested, a), t1 (p2, completed, b), t2 (p1, completed, b); and `also`."""
    async with store.transaction() as tx:
        for n, (patient, status, code) in enumerate(
            [("p1", "requested", "a"), ("p2", "completed", "b"), ("p1", "completed", "b")]
        ):
            await tx.resources.insert(
                task(f"t{n}", patient, status, code), now=T0 + timedelta(hours=n)
            )
        for content in also:
            await tx.resources.insert(content, now=T0)


async def test_searches_of_one_shape_find_their_own_matches(store: ResourceStore) -> None:
    await seed(store, {"resourceType": "Organization", "id": "o1", "name": "North Clinic"})
    assert await ids(store, "Task", ("patient", "p1")) == ["t0", "t2"]
    assert await ids(store, "Task", ("patient", "p2")) == ["t1"]
    assert await ids(store, "Task", ("patient", "Patient/p2")) == ["t1"]
    assert await ids(store, "Task", ("status", "requested")) == ["t0"]
    assert await ids(store, "Task", ("status", "completed")) == ["t1", "t2"]
    assert await ids(store, "Task", ("code", "http://example.org/codes|b")) == ["t1", "t2"]
    assert await ids(store, "Task", ("code", "http://example.org/other|b")) == []
    assert await ids(store, "Task", ("_id", "t0,t1")) == ["t0", "t1"]
    assert await ids(store, "Task", ("_id", "t2,t0,t9")) == ["t0", "t2"]
    assert await ids(store, "Task", ("_lastUpdated", "gt2026-12-01T09:30:00Z")) == ["t1", "t2"]
    assert await ids(store, "Task", ("_lastUpdated", "gt2026-12-01T10:30:00Z")) == ["t2"]
    assert await ids(store, "Organization", ("name:contains", "orth")) == ["o1"]
    assert await ids(store, "Organization", ("name:contains", "south")) == []
    both = [("patient", "p1"), ("status", "completed")]
    assert await ids(store, "Task", *both) == ["t2"]
    assert await ids(store, "Task", ("patient", "p2"), ("status", "requested")) == []


def conditional(resource_type: str, *params: tuple[str, str], patient: str = "") -> SearchQuery:
    """A conditional create's query (two matches at most), in `patient`'s compartment if given."""
    query = parse_search(resource_type, params, base_url=BASE_URL, default_count=2, max_count=2)
    compartment = (("patient", "subject", "for"), patient) if patient else None
    return SearchQuery(
        resource_type, query.filters, 2, None, (), False, (), False, compartment=compartment
    )


async def test_batched_matches_of_one_shape_find_their_own(store: ResourceStore) -> None:
    await seed(store, {"resourceType": "Patient", "id": "p1"})

    async def matched(queries: list[SearchQuery], known: list[tuple[str, str]]) -> list[Any]:
        async with store.transaction() as tx:
            found = await tx.resources.matches(queries, known=known)
            exist = await tx.resources.existing(known)
        return [sorted(m.id for m in f) for f in found] + [sorted(exist)]

    code_b = ("code", "http://example.org/codes|b")
    assert await matched(
        [conditional("Task", ("status", "requested")), conditional("Task", code_b)], []
    ) == [["t0"], ["t1", "t2"], []]
    # the same shapes, other values, and known keys of any number (one list parameter)
    assert await matched(
        [conditional("Task", ("status", "completed")), conditional("Task", ("code", "a"))],
        [("Patient", "p1"), ("Patient", "p9"), ("Task", "t1")],
    ) == [["t1", "t2"], ["t0"], [("Patient", "p1"), ("Task", "t1")]]
    assert await matched(
        [conditional("Task", ("status", "cancelled")), conditional("Task", ("code", "b"))],
        [("Patient", "p2")],
    ) == [[], ["t1", "t2"], []]
    # a patient's compartment: its id is a value too
    for patient, expected in [("p1", [["t2"], ["t0"]]), ("p2", [["t1"], ["t1"]])]:
        queries = [
            conditional("Task", ("status", "completed"), patient=patient),
            conditional("Task", ("_id", "t0,t1"), patient=patient),
        ]
        assert await matched(queries, []) == [*expected, []]


def test_the_shape_leaves_the_values_out() -> None:
    def shape(*params: tuple[str, str]) -> Any:
        return query_shape(
            parse_search("Task", params, base_url=BASE_URL, default_count=50, max_count=50)
        )

    assert shape(("patient", "p1"))[0] == shape(("patient", "p2"))[0]
    assert shape(("patient", "p1"))[1] != shape(("patient", "p2"))[1]
    assert shape(("_id", "a"))[0] == shape(("_id", "a,b,c"))[0]  # one list parameter
    # what changes the SQL is in the shape: another prefix, a system, a second value
    assert shape(("authored-on", "gt2026")) != shape(("authored-on", "lt2026"))
    assert shape(("code", "x"))[0] != shape(("code", "s|x"))[0]
    assert shape(("status", "a"))[0] != shape(("status", "a,b"))[0]
