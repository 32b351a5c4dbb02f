"""Search index rows (pure): what the store writes for the current version of a resource, by
the parameters of fhir/search_parameters.py."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from fhir_adapter.fhir.dates import date_range, period_range
from fhir_adapter.fhir.references import parse_reference
from fhir_adapter.fhir.search_parameters import SEARCH_PARAMS, SearchParam


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
        for step in _steps(path):
            next_nodes: list[Any] = []
            for node in nodes:
                child = node.get(step) if isinstance(node, dict) else None
                if isinstance(child, list):
                    next_nodes.extend(child)
                elif child is not None:
                    next_nodes.append(child)
            nodes = next_nodes
        yield from nodes


@cache
def _steps(path: str) -> tuple[str, ...]:
    """A search parameter's path, split once (every write of its type walks it)."""
    return tuple(path.split("."))


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
