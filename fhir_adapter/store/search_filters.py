"""A search's conditions as SQL, built from its shape: what the statement looks like (types,
parameters, prefixes, modifiers, which parts are present) apart from the values searched for.

Issue #18: building a search's statement with SQLAlchemy, and its cache key, was about a sixth
of a small search's CPU. Searches of one shape share one statement, built once with named bind
parameters, and each search passes its values (`query_shape`). The batched matches of
conditional creates (store/resources.py) share theirs the same way, by the shapes of their
queries (`conditions_shape`), each query's parameters named apart (`prefixed`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    not_,
    or_,
    select,
    true,
)

from fhir_adapter.fhir.search import (
    DateCriterion,
    Filter,
    ReferenceCriterion,
    SearchQuery,
    StringCriterion,
    TokenCriterion,
)
from fhir_adapter.store.tables import (
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)

# bind(name, type_=None, expanding=False): a value's place in the statement
Bind = Callable[..., BindParameter[Any]]
Shape = tuple[Any, ...]


def prefixed(prefix: str) -> Bind:
    """Named parameters, their names prefixed: several queries in one statement (each its own
    values, `prefix` added to the names of its values)."""

    def bind(name: str, *, type_: Any = None, expanding: bool = False) -> BindParameter[Any]:
        return bindparam(prefix + name, type_=type_, expanding=expanding)

    return bind


bind_params = prefixed("")  # named parameters: the statement is shared, each search its values


def query_shape(query: SearchQuery) -> tuple[Shape, dict[str, Any]]:
    """The shape of a search's conditions and cursor, and the values its statement takes."""
    (resource_type, filters, compartment), values = conditions_shape(query)
    cursor = query.cursor
    if cursor is not None and query.sort:
        values["after_at"], values["after_id"] = cursor.last_updated, cursor.id
    elif cursor is not None:
        values["after_pk"] = cursor.pk
    shape = (resource_type, filters, compartment, query.sort, cursor is not None)
    return shape, values


def conditions_shape(query: SearchQuery) -> tuple[Shape, dict[str, Any]]:
    """The shape of a search's conditions (type, filters, compartment) and their values."""
    values: dict[str, Any] = {"rt": query.resource_type}
    filters = []
    for position, flt in enumerate(query.filters):
        shape, found = filter_shape(position, flt)
        filters.append(shape)
        values |= found
    compartment = None
    if query.compartment is not None:
        compartment, values["patient"] = query.compartment
    return (query.resource_type, tuple(filters), compartment), values


def conditions_sql(shape: Shape, bind: Bind) -> list[ColumnElement[bool]]:
    """SQL for a search's conditions (`conditions_shape`), ANDed by the caller."""
    resource_type, filters, compartment = shape
    conditions = [resources.c.resource_type == bind("rt")]
    conditions += [filter_sql(n, f, bind) for n, f in enumerate(filters)]
    if compartment is not None:
        conditions.append(compartment_condition(resource_type, compartment, bind("patient")))
    return conditions


def filter_shape(position: int, flt: Filter) -> tuple[Shape, dict[str, Any]]:
    """One filter's shape and values; its parameters are named after its position."""
    name = f"f{position}"
    if flt.param.type == "id":
        return (flt.param, flt.negate, ()), {name: [str(c) for c in flt.criteria]}
    shapes: list[Shape] = []
    values: dict[str, Any] = {}
    for number, c in enumerate(flt.criteria):
        at = f"{name}c{number}"
        if isinstance(c, TokenCriterion):
            shapes.append(("token", c.code is not None, c.match_system, c.system is not None))
            values |= {f"{at}code": c.code, f"{at}system": c.system}
        elif isinstance(c, ReferenceCriterion):
            shapes.append(("reference", c.url is not None, c.resource_type is not None))
            values |= {f"{at}url": c.url, f"{at}id": c.id, f"{at}type": c.resource_type}
        elif isinstance(c, DateCriterion):
            shapes.append(("date", c.prefix))
            values |= {f"{at}low": c.low, f"{at}high": c.high}
        elif isinstance(c, StringCriterion):
            shapes.append(("string", c.modifier))
            escaped = c.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = {"exact": c.value, "contains": f"%{escaped}%"}
            values[at] = pattern.get(c.modifier or "", f"{escaped}%")
        else:
            shapes.append(("none",))
    return (flt.param, flt.negate, tuple(shapes)), values


def filter_sql(position: int, shape: Shape, bind: Bind) -> ColumnElement[bool]:
    """SQL for one filter: its criteria ORed (and negated for `:not`)."""
    param, negate, criteria = shape
    if param.type == "id":
        condition: ColumnElement[bool] = resources.c.id.in_(bind(f"f{position}", expanding=True))
    elif param.type == "last-updated":
        dates = [
            date_match(c[1], bind(f"f{position}c{n}low"), bind(f"f{position}c{n}high"), *_UPDATED)
            for n, c in enumerate(criteria)
            if c[0] == "date"
        ]
        condition = or_(*dates)
    else:
        rows = index_rows(position, shape, bind)
        condition = rows.where(rows.selected_columns[0] == resources.c.pk).exists()
    return not_(condition) if negate else condition


_UPDATED = (resources.c.last_updated, resources.c.last_updated)
INDEX_TABLES = {
    "token": search_token,
    "reference": search_reference,
    "date": search_date,
    "string": search_string,
}


def index_rows(position: int, shape: Shape, bind: Bind) -> Select[Any]:
    """The index rows a token, reference, date or string filter matches (their resource keys)."""
    param, _negate, criteria = shape
    table = INDEX_TABLES[param.type]
    names = (f"f{position}c{n}" for n in range(len(criteria)))
    matches = or_(*(_criterion(table, c, at, bind) for c, at in zip(criteria, names, strict=True)))
    return select(table.c.resource_pk).where(table.c.param == param.name, matches)


def _criterion(table: Table, shape: Shape, at: str, bind: Bind) -> ColumnElement[bool]:
    kind = shape[0]
    if kind == "token":
        _, has_code, match_system, has_system = shape
        parts = []
        if has_code:
            parts.append(table.c.code == bind(f"{at}code"))
        if match_system:
            parts.append(
                table.c.system == bind(f"{at}system") if has_system else table.c.system.is_(None)
            )
        return and_(*parts) if parts else true()
    if kind == "reference":
        _, has_url, has_type = shape
        if has_url:
            return table.c.url == bind(f"{at}url")
        parts = [table.c.target_id == bind(f"{at}id"), table.c.url.is_(None)]
        if has_type:
            parts.append(table.c.target_type == bind(f"{at}type"))
        return and_(*parts)
    if kind == "date":
        return date_match(shape[1], bind(f"{at}low"), bind(f"{at}high"), table.c.low, table.c.high)
    if kind == "string":
        if shape[1] == "exact":
            return table.c.value == bind(at)
        return table.c.value.like(bind(at), escape="\\")
    return false()


def date_match(
    prefix: str,
    at_low: Any,
    at_high: Any,
    low: ColumnElement[datetime],
    high: ColumnElement[datetime],
) -> ColumnElement[bool]:
    """FHIR date prefixes over ranges (search.html#prefix): the stored range vs the searched one."""
    if prefix == "eq":
        return and_(low >= at_low, high <= at_high)
    if prefix == "ne":
        return not_(and_(low >= at_low, high <= at_high))
    if prefix == "gt":
        return and_(high > at_high)  # and_: typed as a condition
    if prefix == "lt":
        return and_(low < at_low)  # and_: typed as a condition
    if prefix == "ge":
        return or_(high > at_high, and_(low >= at_low, high <= at_high))
    if prefix == "le":
        return or_(low < at_low, and_(low >= at_low, high <= at_high))
    if prefix == "sa":
        return and_(low > at_high)  # and_: typed as a condition
    if prefix == "eb":
        return and_(high < at_low)  # and_: typed as a condition
    return and_(low <= at_high, high >= at_low)  # ap: the ranges overlap


def compartment_condition(
    resource_type: str, params: tuple[str, ...], patient_id: str | BindParameter[Any]
) -> ColumnElement[bool]:
    """Only resources in Patient/`patient_id`'s compartment (the Patient itself, or a reference
    to it through one of `params`); `patient_id` is the id or its bind parameter."""
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
