"""Search over MemoryStore's resources, with the SQL store's semantics (store/search_sql.py):
token, reference, date, string, `_id` and `_lastUpdated` filters (ORed criteria, `:not`), the
Patient compartment, `_count`, paging cursors, `_total` and `_include`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from fhir_adapter.fhir.search import (
    DateCriterion,
    Filter,
    ReferenceCriterion,
    SearchCursor,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
)
from fhir_adapter.fhir.search_index import IndexRows


@dataclass(frozen=True, slots=True)
class Row:
    """A current resource as search sees it: its primary key, id, lastUpdated and index rows."""

    pk: int
    resource_type: str
    id: str
    last_updated: datetime
    index: IndexRows


def page_keys(
    rows: Iterable[Row], query: SearchQuery
) -> tuple[list[Row], int, SearchCursor | None, list[tuple[str, str]]]:
    """The page of matching rows (in the search's order), the total (-1 if not asked; counted
    on the first page, then carried in the cursor), the next cursor, and the `(type, id)` keys
    the page `_include`s (matches left out). Totals are always exact: no estimates here."""
    matching = sorted(
        (row for row in rows if row.resource_type == query.resource_type and _matches(row, query)),
        key=lambda row: (row.last_updated, row.id) if query.sort else (row.pk,),
        reverse=query.sort.startswith("-"),
    )
    counted = query.with_total or query.summary_count
    total = len(matching) if counted and (query.total != "none" or query.summary_count) else -1
    cursor = query.cursor
    if total >= 0 and cursor is not None and cursor.total >= 0:
        total = cursor.total
    if query.summary_count or query.count == 0:
        return [], total, None, []
    after = [row for row in matching if cursor is None or _past(row, query.sort, cursor)]
    page = after[: query.count]
    next_cursor = None
    if len(after) > query.count:
        last = page[-1]
        position = (last.pk, None, None) if not query.sort else (0, last.last_updated, last.id)
        next_cursor = SearchCursor(query.sort, *position, total=total)
    return page, total, next_cursor, _included(query, page)


def _past(row: Row, sort: str, cursor: SearchCursor) -> bool:
    """Whether `row` comes after the cursor's position in the order of `sort`."""
    if not sort:
        return row.pk > cursor.pk
    assert cursor.last_updated is not None and cursor.id is not None
    position, at = (row.last_updated, row.id), (cursor.last_updated, cursor.id)
    return position > at if sort == "_lastUpdated" else position < at


def _matches(row: Row, query: SearchQuery) -> bool:
    if query.compartment is not None and not _in_compartment(row, *query.compartment):
        return False
    return all(_filter(row, flt) for flt in query.filters)


def _in_compartment(row: Row, params: tuple[str, ...], patient_id: str) -> bool:
    if row.resource_type == "Patient":
        return row.id == patient_id
    return any(
        param in params and target_type == "Patient" and target_id == patient_id and url is None
        for param, target_type, target_id, url in row.index.references
    )


def _filter(row: Row, flt: Filter) -> bool:
    param = flt.param
    if param.type == "id":
        found = row.id in [str(c) for c in flt.criteria]
    elif param.type == "last-updated":
        found = any(
            _date_match(c, row.last_updated, row.last_updated)
            for c in flt.criteria
            if isinstance(c, DateCriterion)
        )
    else:
        test = _TESTS.get(param.type)
        if test is None:
            raise NotImplementedError(f"MemoryStore cannot search {param.type} parameters")
        found = any(test(row.index, param.name, c) for c in flt.criteria)
    return not found if flt.negate else found


def _token(index: IndexRows, name: str, c: object) -> bool:
    if not isinstance(c, TokenCriterion):
        return False
    return any(
        p == name
        and (c.code is None or code == c.code)
        and (not c.match_system or system == c.system)
        for p, system, code in index.tokens
    )


def _reference(index: IndexRows, name: str, c: object) -> bool:
    if not isinstance(c, ReferenceCriterion):
        return False
    for p, target_type, target_id, url in index.references:
        if p != name:
            continue
        if c.url is not None:
            if url == c.url:
                return True
        elif (
            target_id == c.id
            and url is None
            and (not c.resource_type or target_type == c.resource_type)
        ):
            return True
    return False


def _date(index: IndexRows, name: str, c: object) -> bool:
    if not isinstance(c, DateCriterion):
        return False
    return any(p == name and _date_match(c, low, high) for p, low, high in index.dates)


def _string(index: IndexRows, name: str, c: object) -> bool:
    if not isinstance(c, StringCriterion):
        return False
    for p, value in index.strings:
        if p != name:
            continue
        if c.modifier == "exact":
            hit = value == c.value
        elif c.modifier == "contains":
            hit = c.value.lower() in value.lower()  # LIKE, case-insensitive as on SQLite
        else:
            hit = value.lower().startswith(c.value.lower())
        if hit:
            return True
    return False


_TESTS: dict[str, Callable[[IndexRows, str, object], bool]] = {
    "token": _token,
    "reference": _reference,
    "date": _date,
    "string": _string,
}


def _date_match(c: DateCriterion, low: datetime, high: datetime) -> bool:
    """FHIR date prefixes over ranges, as store/search_sql.py puts them."""
    within = low >= c.low and high <= c.high
    outcomes = {
        "eq": within,
        "ne": not within,
        "gt": high > c.high,
        "lt": low < c.low,
        "ge": high > c.high or within,
        "le": low < c.low or within,
        "sa": low > c.high,
        "eb": high < c.low,
    }
    return outcomes.get(c.prefix, low <= c.high and high >= c.low)  # ap: the ranges overlap


def _included(query: SearchQuery, page: list[Row]) -> list[tuple[str, str]]:
    if not query.includes or not page:
        return []
    seen = {(row.resource_type, row.id) for row in page}
    wanted: dict[tuple[str, str], None] = {}
    for include in query.includes:
        for row in page:
            for param, target_type, target_id, url in row.index.references:
                if param != include.param.name or url is not None:
                    continue
                if include.target_type and target_type != include.target_type:
                    continue
                key = (str(target_type), str(target_id))
                if key not in seen:
                    wanted[key] = None
    return list(wanted)
