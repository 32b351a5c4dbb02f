"""Issue #13 over every store (the in-memory fake, SQLite, PostgreSQL): `_sort` on `_lastUpdated`
in both directions with ties in id order, `_total` none | estimate | accurate, and the paging
cursor that carries the first page's total so later pages neither count again nor change it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.ports.store import ResourceStore, SearchPage
from fhir_adapter.store.search_sql import EXACT_UP_TO
from fhir_adapter.store.sql import SqlResourceStore
from tests.conftest import BASE_URL

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# (id, minutes after T0): b, d and f share an instant, so their order is their ids' order
# (reversed with the rest for -_lastUpdated)
WRITTEN = [("f", 5), ("a", 1), ("d", 5), ("c", 9), ("b", 5), ("e", 0)]
OLDEST_FIRST = ["e", "a", "b", "d", "f", "c"]
NEWEST_FIRST = OLDEST_FIRST[::-1]


def organization(id: str, name: str = "Clinic") -> dict[str, Any]:
    return {"resourceType": "Organization", "id": id, "name": name}


def query(*params: tuple[str, str]) -> SearchQuery:
    return parse_search(
        "Organization", params, base_url=BASE_URL, default_count=50, max_count=500, strict=True
    )


async def seed(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        for id, minutes in WRITTEN:
            await tx.resources.insert(organization(id), now=T0 + timedelta(minutes=minutes))


async def search(store: ResourceStore, q: SearchQuery) -> SearchPage:
    async with store.transaction(write=False) as tx:
        return await tx.resources.search(q)


async def every_page(store: ResourceStore, q: SearchQuery) -> list[SearchPage]:
    pages = [await search(store, q)]
    while pages[-1].next_cursor is not None:
        pages.append(await search(store, dataclasses.replace(q, cursor=pages[-1].next_cursor)))
    return pages


async def test_sort_by_last_updated_both_ways_ties_in_id_order(store: ResourceStore) -> None:
    await seed(store)
    for sort, expected in (("_lastUpdated", OLDEST_FIRST), ("-_lastUpdated", NEWEST_FIRST)):
        whole = await search(store, query(("_sort", sort)))
        assert [m.id for m in whole.matches] == expected, sort
        # paged two at a time, through the tie: the same order, each match once
        pages = await every_page(store, query(("_sort", sort), ("_count", "2")))
        assert [m.id for p in pages for m in p.matches] == expected, sort
        assert [p.total for p in pages] == [6, 6, 6]
    unsorted = await search(store, query())
    assert [m.id for m in unsorted.matches] == [id for id, _ in WRITTEN]  # key (written) order


async def test_sorted_paging_is_stable_while_resources_are_added(store: ResourceStore) -> None:
    await seed(store)
    first = await search(store, query(("_sort", "-_lastUpdated"), ("_count", "3")))
    assert [m.id for m in first.matches] == NEWEST_FIRST[:3]
    async with store.transaction() as tx:  # newer than every match: it sorts before page 1
        await tx.resources.insert(organization("g"), now=T0 + timedelta(hours=1))
    rest = dataclasses.replace(
        query(("_sort", "-_lastUpdated"), ("_count", "3")), cursor=first.next_cursor
    )
    second = await search(store, rest)
    assert [m.id for m in second.matches] == NEWEST_FIRST[3:]
    assert second.total == 6  # the first page's count, carried in the cursor
    assert (await search(store, query(("_sort", "-_lastUpdated")))).total == 7


async def test_total_none_estimate_accurate(store: ResourceStore) -> None:
    await seed(store)
    for total, expected in (("none", -1), ("estimate", 6), ("accurate", 6)):
        page = await search(store, query(("name", "clinic"), ("_total", total), ("_count", "4")))
        assert (page.total, page.total_estimated) == (expected, False), total
        assert page.next_cursor is not None and page.next_cursor.total == expected
        later = await search(
            store,
            dataclasses.replace(
                query(("name", "clinic"), ("_total", total), ("_count", "4")),
                cursor=page.next_cursor,
            ),
        )
        assert [m.id for m in later.matches] == ["b", "e"]
        assert later.total == expected, total
    counted = await search(store, query(("_summary", "count")))
    assert (counted.total, counted.total_estimated) == (6, False)


async def test_a_large_total_is_an_estimate_unless_accurate_is_asked(store: ResourceStore) -> None:
    """Past EXACT_UP_TO matches the default total is PostgreSQL's estimate, marked as one and
    never below what was counted; SQLite and the fake count exactly."""
    async with store.transaction() as tx:
        for n in range(EXACT_UP_TO + 5):
            await tx.resources.insert(organization(f"o{n}", "Many"), now=T0)
    many = await search(store, query(("name", "many"), ("_count", "10")))
    if isinstance(store, SqlResourceStore) and store.engine.dialect.name == "postgresql":
        assert many.total_estimated and many.total >= EXACT_UP_TO + 1
    else:
        assert (many.total, many.total_estimated) == (EXACT_UP_TO + 5, False)
    assert many.next_cursor is not None
    assert (many.next_cursor.total, many.next_cursor.estimated) == (
        many.total,
        many.total_estimated,
    )
    exact = await search(store, query(("name", "many"), ("_total", "accurate"), ("_count", "10")))
    assert (exact.total, exact.total_estimated) == (EXACT_UP_TO + 5, False)
    # a later page of an accurate search does not take an estimate from the cursor
    later = dataclasses.replace(
        query(("name", "many"), ("_total", "accurate"), ("_count", "10")),
        cursor=many.next_cursor,
    )
    assert (await search(store, later)).total == EXACT_UP_TO + 5
