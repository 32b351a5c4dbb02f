"""Search in SQL: a SearchQuery's filters, compartment, page, count and `_include`s as
statements over the resources table and its search index tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    tuple_,
)

from fhir_adapter.fhir.search import (
    DateCriterion,
    Filter,
    ReferenceCriterion,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
)
from fhir_adapter.ports.store import SearchPage, StoredResource
from fhir_adapter.store.connection import SqlConnection
from fhir_adapter.store.tables import (
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)


def stored(resource_type: str, row: Any) -> StoredResource:
    """A StoredResource of `resource_type` from a row of id, version_id, last_updated, content."""
    return StoredResource(resource_type, row.id, row.version_id, row.last_updated, row.content)


async def search_page(db: SqlConnection, query: SearchQuery) -> SearchPage:
    """One page of `query`'s matches, with what they `_include`; the caller flushed its writes
    (the index must hold what its transaction wrote)."""
    conditions = [resources.c.resource_type == query.resource_type]
    conditions.extend(filter_condition(f) for f in query.filters)
    if query.compartment is not None:
        conditions.append(compartment_condition(query.resource_type, *query.compartment))
    total = -1
    # A filtered first page counts its matches in the same statement (issue #18: one round
    # trip, not two), as a scalar subquery: it counts from the indexes alone, where a window
    # count over the page's rows read (and spilled) every match's content (issue #13).
    # A whole type is counted apart: COUNT(*) reads only the (resource_type, pk) index.
    counted_here = (
        query.with_total
        and not query.summary_count
        and query.count > 0
        and query.cursor is None
        and bool(query.filters or query.compartment is not None)
    )
    if (query.with_total or query.summary_count) and not counted_here:
        total = (
            await db.execute(select(func.count()).select_from(resources).where(*conditions))
        ).scalar_one()
    if query.summary_count or query.count == 0:
        return SearchPage([], [], total, None)
    page_conditions = list(conditions)
    if query.cursor is not None:
        page_conditions.append(resources.c.pk > query.cursor)
    columns: list[Any] = [
        resources.c.pk,
        resources.c.id,
        resources.c.version_id,
        resources.c.last_updated,
        resources.c.content,
    ]
    if counted_here:
        counted = select(func.count()).select_from(resources).where(*conditions).correlate(None)
        columns.append(counted.scalar_subquery().label("total"))
    statement: Select[Any] = (
        select(*columns).where(*page_conditions).order_by(resources.c.pk).limit(query.count + 1)
    )
    rows = (await db.execute(statement)).all()
    if counted_here:
        total = int(rows[0].total) if rows else 0
    next_cursor = rows[query.count - 1].pk if len(rows) > query.count else None
    rows = rows[: query.count]
    matches = [stored(query.resource_type, row) for row in rows]
    included = await _includes(db, query, [row.pk for row in rows], matches)
    return SearchPage(matches, included, total, next_cursor)


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
        table = {
            "token": search_token,
            "reference": search_reference,
            "date": search_date,
            "string": search_string,
        }[param.type]
        matches = or_(*(_criterion(table, c) for c in flt.criteria))
        condition = exists().where(
            table.c.resource_pk == resources.c.pk, table.c.param == param.name, matches
        )
    return not_(condition) if flt.negate else condition


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
