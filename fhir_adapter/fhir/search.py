"""Search parameters: what we index for each resource type, and how a query string is read (pure).

The registry here drives three things: the index rows the store writes for every version, the
query the store runs, and the searchParam list of the CapabilityStatement.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.dates import date_range, period_range
from fhir_adapter.fhir.references import ID_PATTERN, parse_reference
from fhir_adapter.fhir.validation import CONTROL_CHARACTERS

ParamType = Literal["token", "reference", "date", "string", "id", "last-updated"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter: its FHIR type and the element paths (relative to the resource) it reads."""

    name: str
    type: ParamType
    paths: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()  # reference params: the only target types indexed (empty: any)
    documentation: str = ""


def _tok(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "token", paths or (name,), documentation=doc)


def _ref(name: str, *paths: str, targets: tuple[str, ...] = (), doc: str = "") -> SearchParam:
    return SearchParam(name, "reference", paths or (name,), targets, doc)


def _date(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "date", paths or (name,), documentation=doc)


def _str(name: str, *paths: str, doc: str = "") -> SearchParam:
    return SearchParam(name, "string", paths or (name,), documentation=doc)


_PATIENT = ("Patient",)
ID_PARAM = SearchParam("_id", "id", documentation="Logical id of the resource")
LAST_UPDATED_PARAM = SearchParam(
    "_lastUpdated", "last-updated", documentation="When the current version was stored"
)

SEARCH_PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _tok("identifier"),
        _str("name", "name"),
        _str("family", "name.family"),
        _str("given", "name.given"),
        _date("birthdate", "birthDate"),
        _tok("gender"),
        _ref("general-practitioner", "generalPractitioner"),
        _ref("organization", "managingOrganization"),
    ),
    "Practitioner": (_tok("identifier"), _str("name", "name"), _str("family", "name.family")),
    "PractitionerRole": (
        _tok("identifier"),
        _ref("practitioner"),
        _ref("organization"),
        _tok("specialty"),
        _tok("role", "code"),
        _ref("endpoint"),
        _tok("active"),
    ),
    "Organization": (
        _tok("identifier"),
        _str("name", "name", "alias"),
        _tok("type"),
        _ref("partof", "partOf"),
        _ref("endpoint"),
    ),
    "Coverage": (
        _tok("identifier"),
        _ref("patient", "beneficiary", targets=_PATIENT),
        _ref("beneficiary"),
        _ref("payor"),
        _ref("subscriber"),
        _tok("status"),
    ),
    "Condition": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("code"),
        _tok("clinical-status", "clinicalStatus"),
        _tok("category"),
    ),
    "RelatedPerson": (
        _tok("identifier"),
        _ref("patient", targets=_PATIENT),
        _tok("relationship"),
        _tok("active"),
    ),
    "CareTeam": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("participant", "participant.member"),
        _tok("status"),
    ),
    "ServiceRequest": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("status"),
        _tok("intent"),
        _tok("priority"),
        _tok("category"),
        _tok("code"),
        _ref("requester"),
        _ref("performer"),
        _ref("based-on", "basedOn"),
        _date("authored", "authoredOn"),
    ),
    "Task": (
        _tok("identifier"),
        _tok("status"),
        _tok("business-status", "businessStatus"),
        _tok("intent"),
        _tok("priority"),
        _tok("code"),
        _ref("patient", "for", targets=_PATIENT),
        _ref("subject", "for"),
        _ref("focus"),
        _ref("owner"),
        _ref("requester"),
        _ref("based-on", "basedOn"),
        _date("authored-on", "authoredOn"),
        _date("modified", "lastModified"),
        _date("period", "executionPeriod"),
    ),
    "Claim": (
        _tok("identifier"),
        _ref(
            "requested-service",
            "item.extension.valueReference",
            targets=("ServiceRequest",),
            doc="The ServiceRequest a PAS Claim item asks for (extension requestedService)",
        ),
        _ref("patient", targets=_PATIENT),
        _tok("use"),
        _tok("status"),
        _date("created"),
        _ref("insurer"),
        _ref("provider"),
    ),
    "ClaimResponse": (
        _tok("identifier"),
        _ref("patient", targets=_PATIENT),
        _ref("request"),
        _ref("insurer"),
        _ref("requestor"),
        _tok("outcome"),
        _tok("status"),
        _tok("use"),
        _date("created"),
    ),
    "DiagnosticReport": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("based-on", "basedOn"),
        _ref("performer"),
        _tok("code"),
        _tok("status"),
        _tok("category"),
        _date("date", "effectiveDateTime", "effectivePeriod"),
        _date("issued"),
    ),
    "DocumentReference": (
        _tok("identifier", "identifier", "masterIdentifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _tok("status"),
        _tok("type"),
        _tok("category"),
        _date("date"),
    ),
    "Communication": (
        _tok("identifier"),
        _ref("patient", "subject", targets=_PATIENT),
        _ref("subject"),
        _ref("recipient"),
        _ref("sender"),
        _ref("based-on", "basedOn"),
        _tok("status"),
        _tok("category"),
        _date("sent"),
        _date("received"),
    ),
    "Subscription": (
        _tok("status"),
        _str("criteria"),
        _str("url", "channel.endpoint"),
        _tok("type", "channel.type"),
        _tok("_tag", "meta.tag", doc="Tags; the owner's client id is one (issue #16)"),
    ),
    "AuditEvent": (
        _date("date", "recorded"),
        _tok("type"),
        _tok("subtype"),
        _tok("action"),
        _tok("outcome"),
        _ref("agent", "agent.who"),
        _tok("altid", "agent.altId", doc="The client id of the system that made the request"),
        _ref("entity", "entity.what"),
        _ref("patient", "entity.what", targets=_PATIENT),
    ),
    "Provenance": (
        _ref("target"),
        _ref("patient", "target", targets=_PATIENT),
        _ref("agent", "agent.who"),
        _ref("entity", "entity.what"),
        _date("recorded"),
    ),
}

# Issue #16: bounds on one search, so that no search reaches a database's limits (SQLite's
# expression depth, PostgreSQL's 32,767 bind parameters) and answers 500.
MAX_SEARCH_PARAMS = 100
MAX_SEARCH_VALUE_LENGTH = 4096
MAX_OR_VALUES = 100

_CONTROL_PARAMS = {"_count", "_cursor", "_include", "_format", "_summary", "_total", "_pretty"}


def params_for(resource_type: str) -> dict[str, SearchParam]:
    """Every parameter `resource_type` can be searched by, including `_id` and `_lastUpdated`."""
    params = {p.name: p for p in SEARCH_PARAMS.get(resource_type, ())}
    params["_id"] = ID_PARAM
    params["_lastUpdated"] = LAST_UPDATED_PARAM
    return params


# ---------------------------------------------------------------------------------------------
# Index rows: what the store writes for the current version of a resource.


@dataclass(slots=True)
class IndexRows:
    """The search index entries of one resource version."""

    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    strings: list[tuple[str, str]] = field(default_factory=list)


def index_rows(resource: dict[str, Any], *, base_url: str | None = None) -> IndexRows:
    """Extract every indexed value of `resource`, de-duplicated."""
    rows = IndexRows()
    for param in SEARCH_PARAMS.get(resource["resourceType"], ()):
        for value in _values(resource, param.paths):
            if param.type == "token":
                rows.tokens.extend((param.name, s, c) for s, c in _tokens(value))
            elif param.type == "reference":
                rows.references.extend(_reference_row(param, value, base_url))
            elif param.type == "date":
                span = _date_span(value)
                if span:
                    rows.dates.append((param.name, *span))
            elif param.type == "string":
                rows.strings.extend((param.name, s) for s in _strings(value))
    rows.tokens = list(dict.fromkeys(rows.tokens))
    rows.references = list(dict.fromkeys(rows.references))
    rows.dates = list(dict.fromkeys(rows.dates))
    rows.strings = list(dict.fromkeys(rows.strings))
    return rows


def _values(resource: dict[str, Any], paths: Iterable[str]) -> Iterator[Any]:
    for path in paths:
        nodes: list[Any] = [resource]
        for step in path.split("."):
            next_nodes: list[Any] = []
            for node in nodes:
                child = node.get(step) if isinstance(node, dict) else None
                if isinstance(child, list):
                    next_nodes.extend(child)
                elif child is not None:
                    next_nodes.append(child)
            nodes = next_nodes
        yield from nodes


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if isinstance(value.get("coding"), list):
            for coding in value["coding"]:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    yield coding.get("system"), coding["code"]
        elif isinstance(value.get("code"), str):
            yield value.get("system"), value["code"]
        elif isinstance(value.get("value"), str):
            yield value.get("system"), value["value"]


def _reference_row(
    param: SearchParam, value: Any, base_url: str | None
) -> Iterator[tuple[str, str | None, str | None, str | None]]:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return
    ref = parse_reference(value["reference"], base_url=base_url)
    if ref.kind not in ("local", "absolute"):
        return
    if param.targets and ref.resource_type not in param.targets:
        return
    url = ref.raw if ref.kind == "absolute" else None
    yield param.name, ref.resource_type, ref.id, url


def _date_span(value: Any) -> tuple[datetime, datetime] | None:
    if isinstance(value, str):
        return date_range(value)
    if isinstance(value, dict):
        return period_range(value)
    return None


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form used for string search (FHIR string matching rules)."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield normalize_string(value)
    elif isinstance(value, dict):  # HumanName, Address: each part is searchable on its own
        for key in ("text", "family", "given", "prefix", "suffix", "line", "city", "state"):
            part = value.get(key)
            for item in part if isinstance(part, list) else [part]:
                if isinstance(item, str):
                    yield normalize_string(item)


# ---------------------------------------------------------------------------------------------
# Queries: what a search URL asks for.


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
