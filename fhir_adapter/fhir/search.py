"""Search queries (pure): how a search URL's parameters are read into a SearchQuery the store runs.

What each resource type can be searched by is in fhir/search_parameters.py; what is indexed for
each version, in fhir/search_index.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

_CONTROL_PARAMS = {
    "_count", "_cursor", "_include", "_format", "_summary", "_total", "_pretty", "_sort",
}  # fmt: skip
# Issue #13: the sorts served (search.html#sort), ties in id order; without `_sort`, key order.
SORTS = ("_lastUpdated", "-_lastUpdated")
# search.html#total; `estimate` is the default (exact up to a bound, then the database's
# estimate, marked as one), `_summary=count` counts exactly unless told otherwise.
TOTALS = ("none", "estimate", "accurate")


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_KEY = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """Where the next page starts and the total the first page counted (issue #13: later pages
    carry it instead of counting again, so it stays the same while paging). Opaque to clients:
    `str()` is the `_cursor` value of the next link."""

    sort: str  # "" (key order) or one of SORTS
    pk: int = 0  # key order: the last key of the page before
    last_updated: datetime | None = None  # a _lastUpdated sort: the last match's instant and id
    id: str | None = None
    total: int = -1  # -1: not counted
    estimated: bool = False

    def __str__(self) -> str:
        micros = None
        if self.last_updated is not None:
            micros = (self.last_updated - _EPOCH) // timedelta(microseconds=1)
        fields = [self.sort, self.pk, micros, self.id, self.total, int(self.estimated)]
        text = json.dumps(fields, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(text).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    filters: tuple[Filter, ...]
    count: int
    cursor: SearchCursor | None
    includes: tuple[Include, ...]
    summary_count: bool
    applied: tuple[tuple[str, str], ...]  # the parameters honoured, for the `self` link
    with_total: bool = True  # False: skip counting (conditional creates only need two matches)
    # (reference parameters, Patient id): only that patient's compartment (access/compartment.py)
    compartment: tuple[tuple[str, ...], str] | None = None
    sort: str = ""  # "" (key order) or one of SORTS
    total: str = "estimate"  # one of TOTALS


@dataclass(slots=True)
class _Controls:
    """The control parameters of one search as they are read."""

    count: int
    cursor: SearchCursor | None = None
    summary_count: bool = False
    sort: str = ""
    total: str | None = None
    includes: list[Include] = field(default_factory=list)


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
    """Read search parameters into a SearchQuery; unknown parameters (and unsupported `_sort`
    and `_total` values) are ignored unless `strict`, as search.html#errors allows."""
    params = list(params)
    if len(params) > MAX_SEARCH_PARAMS:
        raise InvalidRequestError(
            f"The search has {len(params)} parameters; the limit is {MAX_SEARCH_PARAMS}"
        )
    known = params_for(resource_type)
    filters: list[Filter] = []
    applied: list[tuple[str, str]] = []
    controls = _Controls(count=default_count)
    for raw_name, raw_value in params:
        _check_bounds(raw_name, raw_value)
        name, _, modifier = raw_name.partition(":")
        if name in _CONTROL_PARAMS:
            if _read_control(controls, resource_type, raw_name, raw_value, max_count, strict):
                applied.append((raw_name, raw_value))
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
    if controls.cursor is not None and controls.cursor.sort != controls.sort:
        raise InvalidRequestError(
            "_cursor belongs to a search with another _sort; follow the next link as given",
            expression="_cursor",
        )
    return SearchQuery(
        resource_type=resource_type,
        filters=tuple(filters),
        count=controls.count,
        cursor=controls.cursor,
        includes=tuple(controls.includes),
        summary_count=controls.summary_count,
        applied=tuple(applied),
        sort=controls.sort,
        total=controls.total or ("accurate" if controls.summary_count else "estimate"),
    )


def _read_control(
    controls: _Controls, resource_type: str, raw_name: str, value: str, max_count: int, strict: bool
) -> bool:
    """Read one control parameter into `controls`; whether it goes in the `self` link."""
    name = raw_name.partition(":")[0]
    if name == "_count":
        controls.count = min(_non_negative_int(raw_name, value), max_count)
    elif name == "_cursor":
        controls.cursor = _parse_cursor(value)
    elif name == "_include":
        controls.includes.append(_parse_include(resource_type, value))
        return True
    elif name == "_summary" and value == "count":
        controls.summary_count = True
        return True
    elif name == "_summary" and value != "false" and strict:
        raise InvalidRequestError(f"_summary={value} is not supported", expression="_summary")
    elif name in ("_sort", "_total"):
        allowed = SORTS if name == "_sort" else TOTALS
        if value in allowed:
            setattr(controls, name[1:], value)
            return True
        if strict:
            raise InvalidRequestError(
                f"{name}={value[:60]} is not supported; {name} takes {', '.join(allowed)}",
                expression=name,
            )
    return False


def _parse_cursor(value: str) -> SearchCursor:
    """A `_cursor` this server gave (a bare key is a key-order cursor, from before issue #13)."""
    if re.fullmatch(r"[0-9]+", value):
        return SearchCursor("", _non_negative_int("_cursor", value))
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
        sort, pk, micros, id, total, estimated = json.loads(decoded)
        cursor = SearchCursor(
            sort,
            pk,
            None if micros is None else _EPOCH + timedelta(microseconds=micros),
            id,
            total,
            bool(estimated),
        )
        valid = _cursor_is_valid(cursor, micros, estimated)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        valid = False
    if not valid:
        raise InvalidRequestError(
            "_cursor is not a cursor this server gave; follow the next link as given",
            expression="_cursor",
        )
    return cursor


def _cursor_is_valid(cursor: SearchCursor, micros: object, estimated: object) -> bool:
    def whole(value: object, low: int) -> bool:
        return type(value) is int and low <= value <= _MAX_KEY

    if cursor.sort not in ("", *SORTS) or not whole(cursor.pk, 0) or estimated not in (0, 1):
        return False
    if not whole(cursor.total, -1):
        return False
    if not cursor.sort:
        return micros is None and cursor.id is None
    return (
        type(micros) is int
        and isinstance(cursor.id, str)
        and ID_PATTERN.match(cursor.id) is not None
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
