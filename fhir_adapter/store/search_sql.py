"""Search in SQL: a SearchQuery's filters, compartment, page, count and `_include`s as
statements over the resources table and its search index tables."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Select, String, bindparam, func, select, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from fhir_adapter.fhir.search import SearchCursor, SearchQuery
from fhir_adapter.ports.store import SearchPage, StoredResource
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.search_filters import (
    INDEX_TABLES,
    Shape,
    bind_params,
    conditions_sql,
    filter_shape,
    index_rows,
    query_shape,
)
from fhir_adapter.store.tables import UtcDateTime, resources, search_reference, stored_json

__all__ = ["search_page", "stored"]


def stored(resource_type: str, row: Any) -> StoredResource:
    """A StoredResource of `resource_type` from a row of id, version_id, last_updated, json."""
    return StoredResource(resource_type, row.id, row.version_id, row.last_updated, json=row.json)


def page_stored(resource_type: str, rows: Sequence[Any]) -> list[StoredResource]:
    """The StoredResources of a page's rows (pk, id, version_id, last_updated, json, ...),
    unpacked by position: a Row's attributes by name cost a lookup each, 250 on a page of 50,
    and asyncpg's Records have none (SqlConnection.rows)."""
    return [
        StoredResource(resource_type, id, version_id, last_updated, json=json)
        for _pk, id, version_id, last_updated, json, *_ in rows
    ]


# Issue #13: `_total=estimate` (the default) counts exactly up to this many matches; past that a
# count would read every match, so the total is PostgreSQL's planner estimate, marked as one. A first page that holds every
# match has its exact total either way.
EXACT_UP_TO = 1000
# Issue #18: a search whose count reached EXACT_UP_TO within this many seconds answers with the
# planner's estimate it got then, counting nothing (the count and the EXPLAIN were about half
# of a page of 50's CPU). Resources are never deleted, so such a search rarely falls back
# under the cap meanwhile; the total is marked as an estimate either way.
ESTIMATE_SECONDS = 10.0
ESTIMATES_KEPT = 1000


async def search_page(db: SqlConnection, query: SearchQuery) -> SearchPage:
    """One page of `query`'s matches, with what they `_include`; the caller flushed its writes
    (the index must hold what its transaction wrote)."""
    shape, values = query_shape(query)
    built = _built(shape)
    mode, total, estimated = _total_plan(query)
    if mode == "estimate":
        mode, total, estimated = _recent_estimate(db, query)
    # A page counts its matches in the same statement (issue #18: one round trip, not two), as
    # a scalar subquery: it counts from the indexes alone, where a window count over the page's
    # rows read (and spilled) every match's content (issue #13). A whole type's COUNT(*) reads
    # only the (resource_type, pk) index there too.
    counting = mode in ("accurate", "estimate")
    counted_here = counting and not query.summary_count and query.count > 0
    if counting and not counted_here:
        total = (await db.rows(built.count(mode), values))[0][0]
    if query.summary_count or query.count == 0:
        total, estimated = await _settled(db, query, built, values, mode, total, estimated)
        return SearchPage([], [], total, None, estimated)
    statement = built.page(query.count, mode if counted_here else None)
    rows = await db.rows(statement, values)
    if counted_here:
        total = int(rows[0][_TOTAL]) if rows else 0
    total, estimated = await _settled(db, query, built, values, mode, total, estimated)
    if estimated and query.cursor is None and len(rows) <= query.count:
        total, estimated = len(rows), False  # the first page holds every match
    next_cursor = None
    if len(rows) > query.count:
        next_cursor = _cursor(query, rows[query.count - 1], total, estimated)
    rows = rows[: query.count]
    matches = page_stored(query.resource_type, rows)
    pks = [row[0] for row in rows] if query.includes else []
    included = await _includes(db, query, pks, matches)
    return SearchPage(matches, included, total, next_cursor, estimated)


_ORDER: dict[str, tuple[ColumnElement[Any], ...]] = {
    "": (resources.c.pk,),
    "_lastUpdated": (resources.c.last_updated, resources.c.id),
    "-_lastUpdated": (resources.c.last_updated.desc(), resources.c.id.desc()),
}


def _total_plan(query: SearchQuery) -> tuple[str, int, bool]:
    """How this page gets its total, and the total if it is known already: `none`; `carried`
    (the first page's, in the cursor); or counted by this page (`accurate`, or `estimate`:
    exact up to EXACT_UP_TO, then PostgreSQL's estimate)."""
    mode = query.total if query.with_total or query.summary_count else "none"
    if query.summary_count and mode == "none":
        mode = "accurate"
    cursor = query.cursor
    carried = cursor is not None and cursor.total >= 0 and mode != "none"
    if cursor is not None and carried and (mode == "estimate" or not cursor.estimated):
        return "carried", cursor.total, cursor.estimated
    # No plan is asked for up front (issue #18: an EXPLAIN on every search was three quarters of
    # a small search's CPU): the page counts at most EXACT_UP_TO + 1 matches in its own
    # statement, from the indexes, and only a count that reaches the cap asks the planner.
    return mode, -1, False


def _recent_estimate(db: SqlConnection, query: SearchQuery) -> tuple[str, int, bool]:
    """`known` and the estimate, for a search estimated less than ESTIMATE_SECONDS ago; else
    `estimate` (this page counts)."""
    recent = db.estimates.get(_estimate_key(query))
    if recent is not None and time.monotonic() - recent[1] < ESTIMATE_SECONDS:
        return "known", recent[0], True
    return "estimate", -1, False


def _estimate_key(query: SearchQuery) -> Any:
    return (query.resource_type, query.filters, query.compartment)


def _keep_estimate(db: SqlConnection, query: SearchQuery, estimate: int) -> None:
    if len(db.estimates) >= ESTIMATES_KEPT:
        db.estimates.clear()  # bounded: the searches estimated lately come back soon enough
    db.estimates[_estimate_key(query)] = (estimate, time.monotonic())


async def _planner_rows(
    db: SqlConnection, query: SearchQuery, built: _Built, values: dict[str, Any]
) -> int:
    """PostgreSQL's estimate of the matches: its plan, not a count (about a millisecond).
    For one token, reference, date or string filter alone, the fewer of the type's resources and
    the filter's index rows, both estimated in one plan: PostgreSQL's estimate of the semi-join
    between them came out a third of the truth at 1,000,000 Tasks, its estimate of each side
    within a few per cent (docs/performance-search-scale.md)."""
    (flt, *others) = query.filters or (None,)
    single = flt is not None and not others and not flt.negate and query.compartment is None
    if flt is None or not single or flt.param.type not in INDEX_TABLES:
        matching = select(resources.c.pk).where(*built.conditions)
        return int((await _plan(db, matching, values))["Plan Rows"])
    of_type = select(resources.c.pk).where(resources.c.resource_type == query.resource_type)
    shape, found = filter_shape(0, flt)
    both = await _plan(db, of_type.union_all(index_rows(0, shape, bind_params)), found)
    return min(int(side["Plan Rows"]) for side in both["Plans"])


async def _plan(db: SqlConnection, statement: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The top node of PostgreSQL's plan for `statement` (EXPLAIN, FORMAT JSON)."""
    plan = (await db.execute(Explain(statement), values)).scalar_one()
    top: dict[str, Any] = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return top


def _count(conditions: Sequence[ColumnElement[bool]], mode: str) -> Select[Any]:
    """COUNT of the matches; for an estimate, of at most EXACT_UP_TO + 1 of them."""
    if mode == "accurate":
        return select(func.count()).select_from(resources).where(*conditions).correlate(None)
    capped = select(resources.c.pk).where(*conditions).limit(EXACT_UP_TO + 1).correlate(None)
    return select(func.count()).select_from(capped.subquery())


async def _settled(
    db: SqlConnection,
    query: SearchQuery,
    built: _Built,
    values: dict[str, Any],
    mode: str,
    counted: int,
    estimated: bool,
) -> tuple[int, bool]:
    """The total to answer. A capped count that reached its cap is an estimate on PostgreSQL
    (the planner's, never below what was counted); SQLite keeps no row estimates, so there it is
    counted exactly."""
    if mode != "estimate" or counted <= EXACT_UP_TO:
        return counted, estimated
    if not db.is_postgres:
        return (await db.execute(built.count("accurate"), values)).scalar_one(), False
    estimate = max(await _planner_rows(db, query, built, values), counted)
    _keep_estimate(db, query, estimate)
    return estimate, True


def _after(sort: str, paged: bool) -> list[ColumnElement[bool]]:
    """The keyset condition of a page after the first: past the cursor in the search's order
    (a row comparison, which PostgreSQL reads as a range of the sort's index)."""
    if not paged:
        return []
    if not sort:
        return [resources.c.pk > bindparam("after_pk")]
    position = tuple_(resources.c.last_updated, resources.c.id)
    at = tuple_(bindparam("after_at", type_=UtcDateTime()), bindparam("after_id", type_=String()))
    return [position > at if sort == "_lastUpdated" else position < at]


class _Built:
    """The statements of one search shape, built once (search_filters.query_shape)."""

    def __init__(self, shape: Shape) -> None:
        *conditions, self.sort, paged = shape
        self.conditions = conditions_sql(tuple(conditions), bind_params)
        self.after = _after(self.sort, paged)
        self._statements: dict[Any, Any] = {}

    def count(self, mode: str) -> Select[Any]:
        key = ("count", mode)
        if key not in self._statements:
            self._statements[key] = _count(self.conditions, mode)
        return self._statements[key]  # type: ignore[no-any-return]

    def page(self, count: int, counted: str | None) -> Select[Any]:
        """A page of `count` (and one more, to know whether a next page exists) in the
        search's order; with its total (`accurate` or `estimate`) counted in it."""
        key = ("page", count, counted)
        if key in self._statements:
            return self._statements[key]  # type: ignore[no-any-return]
        columns: list[Any] = [  # by position: page_stored, _cursor, _TOTAL
            resources.c.pk,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
            stored_json(resources.c.content),
        ]
        if counted is not None:
            columns.append(_count(self.conditions, counted).scalar_subquery().label("total"))
        order = _ORDER[self.sort]
        statement: Select[Any] = select(*columns).order_by(*order)
        if self.sort:
            # Sorted, the page's keys come first, from the (type, lastUpdated, id, pk) index
            # alone, and then the page's rows: the walk along the index reads no row it passes.
            keys = select(resources.c.pk).where(*self.conditions, *self.after).order_by(*order)
            keys = keys.limit(count + 1).correlate(None)
            statement = statement.where(resources.c.pk.in_(keys.scalar_subquery()))
        else:
            statement = statement.where(*self.conditions, *self.after).limit(count + 1)
        if len(self._statements) < _STATEMENTS_KEPT:
            self._statements[key] = statement
        return statement


_TOTAL = 5  # a counted page's total: the column after pk, id, version_id, last_updated, json
_STATEMENTS_KEPT = 64  # a shape's statements: a few page sizes and totals


@lru_cache(maxsize=512)
def _built(shape: Shape) -> _Built:
    return _Built(shape)


def _cursor(query: SearchQuery, last: Any, total: int, estimated: bool) -> SearchCursor:
    pk, id, _version_id, last_updated, *_ = last  # a page's row (_Built.page)
    if not query.sort:
        return SearchCursor("", pk, total=total, estimated=estimated)
    return SearchCursor(
        query.sort, last_updated=last_updated, id=id, total=total, estimated=estimated
    )


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON)` of a statement (PostgreSQL): its planner's row estimate."""

    inherit_cache = False
    is_select = True  # a read: allowed in read-only transactions

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + str(compiler.process(element.statement, **kw))


async def _includes(
    db: SqlConnection, query: SearchQuery, pks: Sequence[int], matches: Iterable[StoredResource]
) -> list[StoredResource]:
    if not query.includes or not pks:
        return []
    seen = {m.key for m in matches}
    wanted: dict[tuple[str, str], None] = {}
    for include in query.includes:
        statement = select(search_reference.c.target_type, search_reference.c.target_id).where(
            search_reference.c.resource_pk.in_(pks),
            search_reference.c.param == include.param.name,
            search_reference.c.url.is_(None),
        )
        if include.target_type:
            statement = statement.where(search_reference.c.target_type == include.target_type)
        for target_type, target_id in await db.execute(statement):
            if f"{target_type}/{target_id}" not in seen:
                wanted[(target_type, target_id)] = None
    if not wanted:
        return []
    statement = select(
        resources.c.resource_type,
        resources.c.id,
        resources.c.version_id,
        resources.c.last_updated,
        stored_json(resources.c.content),
    ).where(tuple_(resources.c.resource_type, resources.c.id).in_(list(wanted)))
    return [stored(row.resource_type, row) for row in await db.execute(statement)]
