"""Search in SQL: a SearchQuery's filters, compartment, page, count and `_include`s as
statements over the resources table and its search index tables."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from fhir_adapter.fhir.search import (
    DateCriterion,
    Filter,
    ReferenceCriterion,
    SearchCursor,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
)
from fhir_adapter.ports.store import SearchPage, StoredResource
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.tables import (
    UtcDateTime,
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)


def stored(resource_type: str, row: Any) -> StoredResource:
    """A StoredResource of `resource_type` from a row of id, version_id, last_updated, content."""
    return StoredResource(resource_type, row.id, row.version_id, row.last_updated, row.content)


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
    conditions = [resources.c.resource_type == query.resource_type]
    conditions.extend(filter_condition(f) for f in query.filters)
    if query.compartment is not None:
        conditions.append(compartment_condition(query.resource_type, *query.compartment))
    mode, total, estimated = _total_plan(query)
    if mode == "estimate":
        mode, total, estimated = _recent_estimate(db, query)
    # A filtered first page counts its matches in the same statement (issue #18: one round
    # trip, not two), as a scalar subquery: it counts from the indexes alone, where a window
    # count over the page's rows read (and spilled) every match's content (issue #13).
    # A whole type is counted apart: COUNT(*) reads only the (resource_type, pk) index.
    counting = mode in ("accurate", "estimate")
    counted_here = (
        counting
        and not query.summary_count
        and query.count > 0
        and bool(query.filters or query.compartment is not None)
    )
    if counting and not counted_here:
        total = (await db.execute(_count(conditions, mode))).scalar_one()
    if query.summary_count or query.count == 0:
        total, estimated = await _settled(db, query, conditions, mode, total, estimated)
        return SearchPage([], [], total, None, estimated)
    columns: list[Any] = [
        resources.c.pk,
        resources.c.id,
        resources.c.version_id,
        resources.c.last_updated,
        resources.c.content,
    ]
    if counted_here:
        columns.append(_count(conditions, mode).scalar_subquery().label("total"))
    order = _ORDER[query.sort]
    statement: Select[Any] = select(*columns).order_by(*order)
    if query.sort:
        # Sorted, the page's keys come first, from the (type, lastUpdated, id, pk) index alone,
        # and then the page's rows: the walk along the index reads no row it passes over.
        keys = select(resources.c.pk).where(*conditions, *_after(query)).order_by(*order)
        keys = keys.limit(query.count + 1).correlate(None)
        statement = statement.where(resources.c.pk.in_(keys.scalar_subquery()))
    else:
        statement = statement.where(*conditions, *_after(query)).limit(query.count + 1)
    rows = (await db.execute(statement)).all()
    if counted_here:
        total = int(rows[0].total) if rows else 0
    total, estimated = await _settled(db, query, conditions, mode, total, estimated)
    if estimated and query.cursor is None and len(rows) <= query.count:
        total, estimated = len(rows), False  # the first page holds every match
    next_cursor = None
    if len(rows) > query.count:
        next_cursor = _cursor(query, rows[query.count - 1], total, estimated)
    rows = rows[: query.count]
    matches = [stored(query.resource_type, row) for row in rows]
    included = await _includes(db, query, [row.pk for row in rows], matches)
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
    db: SqlConnection, query: SearchQuery, conditions: Sequence[ColumnElement[bool]]
) -> int:
    """PostgreSQL's estimate of the matches: its plan, not a count (about a millisecond).
    For one token, reference, date or string filter alone, the fewer of the type's resources and
    the filter's index rows, both estimated in one plan: PostgreSQL's estimate of the semi-join
    between them came out a third of the truth at 1,000,000 Tasks, its estimate of each side
    within a few per cent (docs/performance-search-scale.md)."""
    (flt, *others) = query.filters or (None,)
    single = flt is not None and not others and not flt.negate and query.compartment is None
    if flt is None or not single or flt.param.type not in _INDEX_TABLES:
        return int((await _plan(db, select(resources.c.pk).where(*conditions)))["Plan Rows"])
    of_type = select(resources.c.pk).where(resources.c.resource_type == query.resource_type)
    both = await _plan(db, of_type.union_all(_index_rows(flt)))
    return min(int(side["Plan Rows"]) for side in both["Plans"])


async def _plan(db: SqlConnection, statement: Any) -> dict[str, Any]:
    """The top node of PostgreSQL's plan for `statement` (EXPLAIN, FORMAT JSON)."""
    plan = (await db.execute(Explain(statement))).scalar_one()
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
    conditions: Sequence[ColumnElement[bool]],
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
        return (await db.execute(_count(conditions, "accurate"))).scalar_one(), False
    estimate = max(await _planner_rows(db, query, conditions), counted)
    _keep_estimate(db, query, estimate)
    return estimate, True


def _after(query: SearchQuery) -> list[ColumnElement[bool]]:
    """The keyset condition of a page after the first: past the cursor in the search's order
    (a row comparison, which PostgreSQL reads as a range of the sort's index)."""
    cursor = query.cursor
    if cursor is None:
        return []
    if not query.sort:
        return [resources.c.pk > cursor.pk]
    position = tuple_(resources.c.last_updated, resources.c.id)
    at = tuple_(literal(cursor.last_updated, UtcDateTime()), literal(cursor.id, String()))
    return [position > at if query.sort == "_lastUpdated" else position < at]


def _cursor(query: SearchQuery, last: Any, total: int, estimated: bool) -> SearchCursor:
    if not query.sort:
        return SearchCursor("", last.pk, total=total, estimated=estimated)
    return SearchCursor(
        query.sort, last_updated=last.last_updated, id=last.id, total=total, estimated=estimated
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
        resources.c.content,
    ).where(tuple_(resources.c.resource_type, resources.c.id).in_(list(wanted)))
    return [
        StoredResource(row.resource_type, row.id, row.version_id, row.last_updated, row.content)
        for row in await db.execute(statement)
    ]


def compartment_condition(
    resource_type: str, params: tuple[str, ...], patient_id: str
) -> ColumnElement[bool]:
    """Only resources in Patient/`patient_id`'s compartment (the Patient itself, or a reference
    to it through one of `params`)."""
    if resource_type == "Patient":
        return resources.c.id == patient_id
    if not params:
        return false()
    return exists().where(
        search_reference.c.resource_pk == resources.c.pk,
        search_reference.c.param.in_(params),
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id == patient_id,
        search_reference.c.url.is_(None),
    )


def filter_condition(flt: Filter) -> ColumnElement[bool]:
    """SQL for one filter: its criteria ORed (and negated for `:not`)."""
    param = flt.param
    if param.type == "id":
        condition: ColumnElement[bool] = resources.c.id.in_([str(c) for c in flt.criteria])
    elif param.type == "last-updated":
        condition = or_(
            *(
                _date_match(c, resources.c.last_updated, resources.c.last_updated)
                for c in flt.criteria
                if isinstance(c, DateCriterion)
            )
        )
    else:
        rows = _index_rows(flt)
        condition = rows.where(rows.selected_columns[0] == resources.c.pk).exists()
    return not_(condition) if flt.negate else condition


_INDEX_TABLES = {
    "token": search_token,
    "reference": search_reference,
    "date": search_date,
    "string": search_string,
}


def _index_rows(flt: Filter) -> Select[Any]:
    """The index rows a token, reference, date or string filter matches (their resource keys)."""
    table = _INDEX_TABLES[flt.param.type]
    matches = or_(*(_criterion(table, c) for c in flt.criteria))
    return select(table.c.resource_pk).where(table.c.param == flt.param.name, matches)


def _criterion(table: Table, criterion: object) -> ColumnElement[bool]:
    if isinstance(criterion, TokenCriterion):
        parts = []
        if criterion.code is not None:
            parts.append(table.c.code == criterion.code)
        if criterion.match_system:
            parts.append(
                table.c.system == criterion.system
                if criterion.system is not None
                else table.c.system.is_(None)
            )
        return and_(*parts) if parts else true()
    if isinstance(criterion, ReferenceCriterion):
        if criterion.url is not None:
            return table.c.url == criterion.url
        parts = [table.c.target_id == criterion.id, table.c.url.is_(None)]
        if criterion.resource_type:
            parts.append(table.c.target_type == criterion.resource_type)
        return and_(*parts)
    if isinstance(criterion, DateCriterion):
        return _date_match(criterion, table.c.low, table.c.high)
    if isinstance(criterion, StringCriterion):
        escaped = criterion.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if criterion.modifier == "exact":
            return table.c.value == criterion.value
        if criterion.modifier == "contains":
            return table.c.value.like(f"%{escaped}%", escape="\\")
        return table.c.value.like(f"{escaped}%", escape="\\")
    return false()


def _date_match(
    c: DateCriterion, low: ColumnElement[datetime], high: ColumnElement[datetime]
) -> ColumnElement[bool]:
    """FHIR date prefixes over ranges (search.html#prefix): the stored range vs the searched one."""
    if c.prefix == "eq":
        return and_(low >= c.low, high <= c.high)
    if c.prefix == "ne":
        return not_(and_(low >= c.low, high <= c.high))
    if c.prefix == "gt":
        return high > c.high
    if c.prefix == "lt":
        return low < c.low
    if c.prefix == "ge":
        return or_(high > c.high, and_(low >= c.low, high <= c.high))
    if c.prefix == "le":
        return or_(low < c.low, and_(low >= c.low, high <= c.high))
    if c.prefix == "sa":
        return low > c.high
    if c.prefix == "eb":
        return high < c.low
    return and_(low <= c.high, high >= c.low)  # ap: the ranges overlap
