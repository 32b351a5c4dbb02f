"""The entries of a transaction or batch Bundle (R4 http.html#transaction): read from the request
into `Entry`s, checked against the caller's scopes, ordered and with their references rewritten.

BundleService (services/bundles.py) runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from fhir_adapter.access.guard import Guard
from fhir_adapter.access.scopes import Interaction
from fhir_adapter.errors import AdapterError, InvalidRequestError, MethodNotAllowedError
from fhir_adapter.fhir.bundle_references import BundleReferences, rewrite_entry_references
from fhir_adapter.fhir.outcome import Issue, make_outcome
from fhir_adapter.fhir.references import ID_PATTERN, rewrite_references
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.services.access_rules import require_client_writable
from fhir_adapter.services.request_checks import check_body_type, require_served

# Transaction processing order (R4 http.html#trules): DELETE, POST, PUT/PATCH, GET/HEAD.
ORDER = {"POST": 0, "PUT": 1, "GET": 2}


@dataclass(slots=True)
class Entry:
    index: int
    method: str
    url: str
    resource_type: str
    id: str | None = None  # PUT target or id assigned to a POST
    version: str | None = None  # GET vread
    query: list[tuple[str, str]] | None = None  # GET search
    resource: dict[str, Any] | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    full_url: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    result: WriteResult | None = None
    status: str = ""

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"


def parse_entries(body: dict[str, Any], base_url: str) -> list[Entry]:
    """Every entry of `body`; in a transaction any bad entry refuses the whole Bundle, in a batch
    it becomes a failed entry of its own."""
    parsed, issues = [], []
    for index, raw in enumerate(body.get("entry") or []):
        try:
            parsed.append(parse_entry(index, raw, base_url))
        except AdapterError as exc:
            if body.get("type") == "transaction":
                issues.extend(exc.issues)
            else:
                parsed.append(failed_entry(index, exc))
    if issues:
        raise InvalidRequestError(issues=issues)
    return parsed


def parse_entry(index: int, raw: dict[str, Any], base_url: str) -> Entry:
    """One entry: its request (method and URL on this server) and, for POST and PUT, its body."""
    path = f"Bundle.entry[{index}]"
    request = raw.get("request")
    if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
        raise InvalidRequestError(
            f"{path}.request with method and url is required", expression=f"{path}.request"
        )
    method, url = request["method"], request["url"]
    if method not in ORDER:
        raise MethodNotAllowedError(
            f"{path}.request.method {method} is not supported here (POST, PUT and GET are)",
            expression=f"{path}.request.method",
        )
    split = _local_url(url, base_url, path)
    segments = [s for s in split.path.split("/") if s]
    entry = Entry(index, method, url, segments[0] if segments else "")
    entry.full_url = raw.get("fullUrl")
    url_issue = partial(  # made only when raised: most entries fit
        InvalidRequestError,
        f"{path}.request.url '{url}' does not fit a {method} entry",
        expression=f"{path}.request.url",
    )
    if not segments:
        raise url_issue()
    try:
        require_served(entry.resource_type)
    except AdapterError as exc:
        raise type(exc)(str(exc), expression=f"{path}.request.url") from exc
    if method in ("POST", "PUT"):
        entry.resource = _entry_body(raw.get("resource"), entry)
    _read_target(entry, request, segments, split.query, url_issue)
    return entry


def _local_url(url: str, base_url: str, path: str) -> SplitResult:
    """The entry's URL relative to this server: an absolute URL must be ours."""
    split = urlsplit(url)
    if split.scheme or split.netloc:  # an absolute URL: accept ours, refuse anyone else's
        base = urlsplit(base_url)
        if (split.scheme, split.netloc) != (
            base.scheme,
            base.netloc,
        ) or not split.path.startswith(base.path + "/"):
            raise InvalidRequestError(
                f"{path}.request.url '{url}' is not on this server",
                expression=f"{path}.request.url",
            )
        split = urlsplit(url[len(base_url) + 1 :])
    return split


def _entry_body(resource: Any, entry: Entry) -> Any:
    """The resource a POST or PUT entry writes: present, and of the type its URL names."""
    path = entry.path
    if resource is None:
        raise InvalidRequestError(
            f"{path}.resource is required for {entry.method}", expression=f"{path}.resource"
        )
    try:
        check_body_type(resource, entry.resource_type)
    except AdapterError as exc:
        raise InvalidRequestError(str(exc), expression=f"{path}.resource.resourceType") from exc
    return resource


def _read_target(
    entry: Entry,
    request: dict[str, Any],
    segments: list[str],
    query: str,
    url_issue: Callable[[], InvalidRequestError],
) -> None:
    """What the URL names for the entry's method: a type (POST, search), an id (PUT, read) or a
    version (vread); with the conditions the request carries."""
    path = entry.path
    if entry.method == "POST":
        if len(segments) != 1 or query:
            raise url_issue()
        entry.if_none_exist = request.get("ifNoneExist")
    elif entry.method == "PUT":
        if len(segments) != 2 or not ID_PATTERN.match(segments[1]):
            raise url_issue()
        entry.id = segments[1]
        if not isinstance(entry.resource, dict) or entry.resource.get("id") != entry.id:
            raise InvalidRequestError(
                f"{path}.resource.id must equal the id in {path}.request.url ('{entry.id}')",
                expression=f"{path}.resource.id",
            )
        entry.if_match = request.get("ifMatch")
    elif len(segments) == 1:  # GET: search
        entry.query = parse_qsl(query, keep_blank_values=True)
    elif len(segments) == 2:  # GET: read
        entry.id = segments[1]
    elif len(segments) == 4 and segments[2] == "_history":  # GET: vread
        entry.id, entry.version = segments[1], segments[3]
    else:
        raise url_issue()


def authorize(entry: Entry, guard: Guard) -> None:
    """The entry's interaction must be one the caller's scopes allow on its type."""
    interaction: Interaction = (
        "c"
        if entry.method == "POST"
        else "u"
        if entry.method == "PUT"
        else "s"
        if entry.query is not None
        else "r"
    )
    if interaction in ("c", "u"):
        require_client_writable(entry.resource_type)
    guard.require(entry.resource_type, interaction, expression=f"{entry.path}.request")


def located(exc: AdapterError, entry: Entry) -> AdapterError:
    """Issues without a location get the entry they came from, so the client knows which one."""
    for i, issue in enumerate(exc.issues):
        if issue.expression is None:
            exc.issues[i] = Issue(
                issue.code, f"{entry.path}: {issue.diagnostics}", entry.path, issue.severity
            )
    return exc


def reference_order(posts: list[Entry], resolved: BundleReferences) -> list[Entry]:
    """POST entries ordered so that one comes after the entries its references resolve to
    (bundle order where there is no dependency, or a cycle)."""
    among = {e.index for e in posts}
    needs = {
        e.index: {t for (p, _), t in resolved.targets.items() if p == e.index} & among - {e.index}
        for e in posts
    }
    ordered: list[Entry] = []
    placed: set[int] = set()
    remaining = list(posts)
    while remaining:
        ready = next((e for e in remaining if needs[e.index] <= placed), remaining[0])
        remaining.remove(ready)
        ordered.append(ready)
        placed.add(ready.index)
    return ordered


def entry_keys(entries: list[Entry]) -> dict[int, str]:
    """Entry index -> the `Type/id` the entry is (being) stored as, once it has one."""
    return {
        e.index: f"{e.resource_type}/{e.id}"
        for e in entries
        if e.method in ("POST", "PUT") and e.id
    }


def rewritten(
    entry: Entry, resolved: BundleReferences, keys: dict[int, str], mapping: dict[str, str]
) -> Any:
    """The entry's resource with its references to other entries naming their stored keys, and
    `urn:` fullUrls rewritten wherever else they appear (uri elements, narrative links)."""
    if resolved.targets:  # both in one walk: one copy of the resource, not two
        return rewrite_entry_references(entry.resource, entry.index, resolved, keys, mapping)
    return rewrite_references(entry.resource, mapping) if mapping else entry.resource


def without_resource(entry: Any) -> Any:
    return {k: v for k, v in entry.items() if k != "resource"} if isinstance(entry, dict) else entry


def failure_response(exc: AdapterError) -> dict[str, Any]:
    return {"response": {"status": str(exc.status_code), "outcome": make_outcome(exc.issues)}}


def failed_entry(index: int, exc: AdapterError) -> Entry:
    entry = Entry(index, "GET", "", "")
    entry.response = failure_response(exc)
    return entry
