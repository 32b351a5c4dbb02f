"""Search queries (pure): how a search URL's parameters are read into a SearchQuery the store runs.

What each resource type can be searched by is in fhir/search_parameters.py; what is indexed for
each version, in fhir/search_index.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.dates import date_range
from fhir_adapter.fhir.references import ID_PATTERN, parse_reference
from fhir_adapter.fhir.search_index import normalize_string
from fhir_adapter.fhir.search_parameters import SearchParam, params_for
from fhir_adapter.fhir.validation import CONTROL_CHARACTERS

# Issue #16: bounds on one search, so that no search reaches a database's limits (SQLite's
# expression depth, PostgreSQL's 32,767 bind parameters) and answers 500.
MAX_SEARCH_PARAMS = 100
MAX_SEARCH_VALUE_LENGTH = 4096
MAX_OR_VALUES = 100

_CONTROL_PARAMS = {"_count", "_cursor", "_include", "_format", "_summary", "_total", "_pretty"}


@dataclass(frozen=True, slots=True)
class TokenCriterion:
    """`code`, `system|code`, `|code` (no system) or `system|` (any code of the system)."""

    code: str | None
    system: str | None
    match_system: bool


@dataclass(frozen=True, slots=True)
class ReferenceCriterion:
    resource_type: str | None
    id: str | None
    url: str | None  # an absolute reference to another server, matched verbatim


@dataclass(frozen=True, slots=True)
class DateCriterion:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class StringCriterion:
    value: str
    modifier: str | None  # None (starts with), "exact" or "contains"


Criterion = TokenCriterion | ReferenceCriterion | DateCriterion | StringCriterion | str


@dataclass(frozen=True, slots=True)
class Filter:
    """One query parameter: its criteria are ORed; several filters are ANDed."""

    param: SearchParam
    criteria: tuple[Criterion, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: SearchParam
    target_type: str | None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    filters: tuple[Filter, ...]
    count: int
    cursor: int | None
    includes: tuple[Include, ...]
    summary_count: bool
    applied: tuple[tuple[str, str], ...]  # the parameters honoured, for the `self` link
    with_total: bool = True  # False: skip counting (conditional creates only need two matches)
    # (reference parameters, Patient id): only that patient's compartment (access/compartment.py)
    compartment: tuple[tuple[str, ...], str] | None = None


_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    base_url: str | None,
    default_count: int,
    max_count: int,
    strict: bool = False,
) -> SearchQuery:
    """Read search parameters into a SearchQuery; unknown parameters are ignored unless `strict`."""
    params = list(params)
    if len(params) > MAX_SEARCH_PARAMS:
        raise InvalidRequestError(
            f"The search has {len(params)} parameters; the limit is {MAX_SEARCH_PARAMS}"
        )
    known = params_for(resource_type)
    filters: list[Filter] = []
    includes: list[Include] = []
    applied: list[tuple[str, str]] = []
    count, cursor, summary_count = default_count, None, False
    for raw_name, raw_value in params:
        _check_bounds(raw_name, raw_value)
        name, _, modifier = raw_name.partition(":")
        if name in _CONTROL_PARAMS:
            if name == "_count":
                count = min(_non_negative_int(raw_name, raw_value), max_count)
            elif name == "_cursor":
                cursor = _non_negative_int(raw_name, raw_value)
            elif name == "_include":
                includes.append(_parse_include(resource_type, raw_value))
                applied.append((raw_name, raw_value))
            elif name == "_summary" and raw_value == "count":
                summary_count = True
                applied.append((raw_name, raw_value))
            elif name == "_summary" and raw_value != "false" and strict:
                raise InvalidRequestError(f"_summary={raw_value} is not supported")
            continue
        param = known.get(name)
        if param is None:
            if strict:
                raise InvalidRequestError(f"Unknown search parameter '{name}' for {resource_type}")
            continue
        if not raw_value:
            continue  # an empty value is ignored, as the spec asks
        filters.append(_parse_filter(param, modifier, raw_value, base_url))
        applied.append((raw_name, raw_value))
    return SearchQuery(
        resource_type=resource_type,
        filters=tuple(filters),
        count=count,
        cursor=cursor,
        includes=tuple(includes),
        summary_count=summary_count,
        applied=tuple(applied),
    )


def _check_bounds(raw_name: str, raw_value: str) -> None:
    """One parameter within the issue #16 bounds: no control characters, not too long, not too
    many ORed values."""
    if CONTROL_CHARACTERS.search(raw_name) or CONTROL_CHARACTERS.search(raw_value):
        raise InvalidRequestError("Search parameters may not hold control characters")
    if len(raw_name) + len(raw_value) > MAX_SEARCH_VALUE_LENGTH:
        raise InvalidRequestError(
            f"Search parameter '{raw_name[:40]}' is longer than the limit of "
            f"{MAX_SEARCH_VALUE_LENGTH} characters"
        )
    if raw_value.count(",") >= MAX_OR_VALUES and len(_split_or(raw_value)) > MAX_OR_VALUES:
        raise InvalidRequestError(
            f"Search parameter '{raw_name[:40]}' lists more than the limit of "
            f"{MAX_OR_VALUES} values"
        )


def _non_negative_int(name: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise InvalidRequestError(f"{name} must be a non-negative whole number, not '{value}'")
    return int(value)


def _split_or(value: str) -> list[str]:
    """Split on commas that are not escaped with a backslash, then unescape."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$") for p in parts]


def _parse_filter(param: SearchParam, modifier: str, value: str, base_url: str | None) -> Filter:
    values = _split_or(value)
    where = f"{param.name}{':' + modifier if modifier else ''}={value}"
    if param.type == "id":
        _no_modifier(param, modifier)
        return Filter(param, tuple(values))
    if param.type in ("date", "last-updated"):
        _no_modifier(param, modifier)
        return Filter(param, tuple(_date_criterion(v, where) for v in values))
    if param.type == "token":
        if modifier not in ("", "not"):
            _no_modifier(param, modifier)
        return Filter(param, tuple(_token_criterion(v) for v in values), negate=modifier == "not")
    if param.type == "string":
        if modifier not in ("", "exact", "contains"):
            _no_modifier(param, modifier)
        return Filter(
            param,
            tuple(StringCriterion(normalize_string(v), modifier or None) for v in values),
        )
    # reference
    type_modifier = None
    if modifier:
        if not re.fullmatch(r"[A-Z][A-Za-z]+", modifier):
            _no_modifier(param, modifier)
        type_modifier = modifier
    return Filter(
        param, tuple(_reference_criterion(param, v, type_modifier, base_url, where) for v in values)
    )


def _no_modifier(param: SearchParam, modifier: str) -> None:
    if modifier:
        raise InvalidRequestError(
            f"Modifier ':{modifier}' is not supported for search parameter '{param.name}'"
        )


def _date_criterion(value: str, where: str) -> DateCriterion:
    prefix = value[:2] if value[:2] in _DATE_PREFIXES else "eq"
    text = value[2:] if value[:2] in _DATE_PREFIXES else value
    span = date_range(text)
    if span is None:
        raise InvalidRequestError(
            f"'{text}' in {where} is not a FHIR date (YYYY, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][zone])"
        )
    return DateCriterion(prefix, *span)


def _token_criterion(value: str) -> TokenCriterion:
    if "|" not in value:
        return TokenCriterion(code=value, system=None, match_system=False)
    system, _, code = value.partition("|")
    return TokenCriterion(code=code or None, system=system or None, match_system=True)


def _reference_criterion(
    param: SearchParam, value: str, type_modifier: str | None, base_url: str | None, where: str
) -> ReferenceCriterion:
    if ID_PATTERN.match(value):
        resource_type = type_modifier or (param.targets[0] if len(param.targets) == 1 else None)
        return ReferenceCriterion(resource_type, value, None)
    ref = parse_reference(value, base_url=base_url)
    if ref.kind == "local":
        if type_modifier and ref.resource_type != type_modifier:
            raise InvalidRequestError(f"{where}: the type modifier and the reference disagree")
        return ReferenceCriterion(ref.resource_type, ref.id, None)
    if ref.kind == "absolute":
        return ReferenceCriterion(ref.resource_type, ref.id, ref.raw)
    raise InvalidRequestError(
        f"'{value}' in {where} is not a reference (Type/id, id or an absolute URL)"
    )


def _parse_include(resource_type: str, value: str) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] != resource_type:
        raise InvalidRequestError(
            f"_include={value} must have the form {resource_type}:parameter[:TargetType]"
        )
    param = params_for(resource_type).get(parts[1])
    if param is None or param.type != "reference":
        raise InvalidRequestError(
            f"_include={value}: '{parts[1]}' is not a reference search parameter of {resource_type}"
        )
    return Include(resource_type, param, parts[2] if len(parts) == 3 else None)


def identifier_condition(system: str, value: str) -> str:
    """`identifier=system|value` as conditional-create criteria, whatever the characters: commas
    and dollars escaped for the search syntax, then URL-encoded so `&` and `=` stay data."""

    def escaped(text: str) -> str:
        return text.replace(",", "\\,").replace("$", "\\$")

    return urlencode({"identifier": f"{escaped(system)}|{escaped(value)}"})
