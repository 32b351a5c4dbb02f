"""Bundles we answer with: searchset, history, transaction- and batch-response (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from fhir_adapter.errors import Issue, make_outcome
from fhir_adapter.fhir.dates import format_instant
from fhir_adapter.fhir.search import SearchCursor, SearchQuery


# What these Bundles need of a stored version and of a search page; the store's StoredResource
# and SearchPage (fhir_adapter.ports) have this shape, and this package never imports the ports.
class StoredResource(Protocol):
    @property
    def resource_type(self) -> str: ...
    @property
    def version_id(self) -> int: ...
    @property
    def last_updated(self) -> datetime: ...
    @property
    def content(self) -> dict[str, Any]: ...
    @property
    def json(self) -> str | None: ...
    @property
    def key(self) -> str: ...


class SearchPage(Protocol):
    @property
    def matches(self) -> Sequence[StoredResource]: ...
    @property
    def included(self) -> Sequence[StoredResource]: ...
    @property
    def total(self) -> int: ...
    @property
    def next_cursor(self) -> SearchCursor | None: ...
    @property
    def total_estimated(self) -> bool: ...


# Issue #13: an estimated total says so, in an outcome entry (search.html#total, Bundle.entry.search.mode).
def _estimate_note() -> dict[str, Any]:
    note = Issue(
        severity="information",
        code="informational",
        diagnostics="Bundle.total is an estimate; ask _total=accurate for an exact count",
        expression="Bundle.total",
    )
    return {"resource": make_outcome([note]), "search": {"mode": "outcome"}}


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def content_of(resource: StoredResource) -> Any:
    return resource.content


def searchset(
    base_url: str,
    query: SearchQuery,
    page: SearchPage,
    *,
    body: Callable[[StoredResource], Any] = content_of,
) -> dict[str, Any]:
    """A searchset Bundle with `total`, a `self` link of the parameters applied and a `next` link.
    `body` gives each entry's resource: its content, or (for an answer) its stored JSON."""
    params = [*query.applied, ("_count", str(query.count))]
    links = [{"relation": "self", "url": _search_url(base_url, query.resource_type, params)}]
    if page.next_cursor is not None:
        next_params = [*params, ("_cursor", str(page.next_cursor))]
        links.append(
            {"relation": "next", "url": _search_url(base_url, query.resource_type, next_params)}
        )
    match, include = {"mode": "match"}, {"mode": "include"}  # shared by the entries
    entries = [_search_entry(base_url, r, match, body) for r in page.matches]
    entries += [_search_entry(base_url, r, include, body) for r in page.included]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total >= 0:  # issue #13: `_total=none` answers without one
        bundle["total"] = page.total
    bundle["link"] = links
    if page.total_estimated:
        entries.append(_estimate_note())
    if entries:
        bundle["entry"] = entries
    return bundle


def history(
    base_url: str,
    versions: Sequence[StoredResource],
    *,
    body: Callable[[StoredResource], Any] = content_of,
) -> dict[str, Any]:
    """An instance history Bundle, newest version first; `body` as for `searchset`."""
    entries = []
    for version in versions:
        entries.append(
            {
                "fullUrl": f"{base_url}/{version.key}",
                "resource": body(version),
                "request": {
                    "method": "POST" if version.version_id == 1 else "PUT",
                    "url": version.resource_type if version.version_id == 1 else version.key,
                },
                "response": {
                    "status": "201 Created" if version.version_id == 1 else "200 OK",
                    "etag": etag(version.version_id),
                    "lastModified": format_instant(version.last_updated),
                },
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": len(entries)}
    if entries:
        bundle["entry"] = entries
    return bundle


def write_response_entry(
    base_url: str, stored: StoredResource, status: str, *, include_resource: bool
) -> dict[str, Any]:
    """One transaction-/batch-response entry for a create or update."""
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{stored.key}"}
    if include_resource:
        entry["resource"] = stored.content
    entry["response"] = {
        "status": status,
        "location": f"{stored.key}/_history/{stored.version_id}",
        "etag": etag(stored.version_id),
        "lastModified": format_instant(stored.last_updated),
    }
    return entry


def _search_entry(
    base_url: str,
    resource: StoredResource,
    search: dict[str, str],
    body: Callable[[StoredResource], Any],
) -> dict[str, Any]:
    return {"fullUrl": f"{base_url}/{resource.key}", "resource": body(resource), "search": search}


def _search_url(base_url: str, resource_type: str, params: list[tuple[str, str]]) -> str:
    return f"{base_url}/{resource_type}?{urlencode(params)}"
