"""Transaction and batch Bundles at `POST /fhir` (R4 http.html#transaction)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.access.scopes import Interaction
from fhir_adapter.errors import (
    AdapterError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir import bundles
from fhir_adapter.fhir.bundle_references import (
    BundleReferences,
    duplicate_fullurl_issues,
    resolve_bundle_references,
    rewrite_entry_references,
)
from fhir_adapter.fhir.outcome import Issue, make_outcome
from fhir_adapter.fhir.references import ID_PATTERN, rewrite_references
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import StoreTransaction
from fhir_adapter.services.resources import (
    ResourceService,
    check_body_type,
    check_match_visible,
    require_client_writable,
    require_served,
    search_guarded,
)

log = logging.getLogger(__name__)

# Transaction processing order (R4 http.html#trules): DELETE, POST, PUT/PATCH, GET/HEAD.
_ORDER = {"POST": 0, "PUT": 1, "GET": 2}


@dataclass(slots=True)
class _Entry:
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


class BundleService:
    """Processes transaction Bundles atomically and batch Bundles entry by entry."""

    def __init__(self, resources: ResourceService, *, max_entries: int) -> None:
        self.resources = resources
        self.max_entries = max_entries

    async def process(
        self, body: Any, *, return_resources: bool = True, guard: Guard = UNRESTRICTED
    ) -> dict[str, Any]:
        """Answer a transaction or batch Bundle with its transaction-/batch-response."""
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise InvalidRequestError(
                "POST to the base takes a Bundle of type transaction or batch",
                expression="resourceType",
            )
        entries = body.get("entry") or []
        if not isinstance(entries, list):
            raise InvalidRequestError(
                "Bundle.entry must be an array of entries", expression="Bundle.entry"
            )
        if len(entries) > self.max_entries:
            raise PayloadTooLargeError(
                f"The Bundle has {len(entries)} entries; this server takes at most {self.max_entries}",
                expression="Bundle.entry",
            )
        if body.get("type") == "transaction":
            validate_resource(body)  # every entry at once: a transaction stands or falls whole
            entries = self._parse_entries(body)
            for entry in entries:  # all or nothing: one entry the caller may not make stops all
                _authorize(entry, guard)
            return await self._transaction(entries, return_resources, guard)
        if body.get("type") == "batch":
            # Entries are validated one by one, so one bad entry fails alone.
            validate_resource({**body, "entry": [_without_resource(e) for e in entries]})
            return await self._batch(self._parse_entries(body), return_resources, guard)
        validate_resource(body)
        raise InvalidRequestError(
            f"Bundle.type '{body.get('type')}' cannot be processed here; use transaction or batch",
            expression="Bundle.type",
        )

    # -- reading the entries ------------------------------------------------------------------

    def _parse_entries(self, body: dict[str, Any]) -> list[_Entry]:
        parsed, issues = [], []
        for index, raw in enumerate(body.get("entry") or []):
            try:
                parsed.append(self._parse_entry(index, raw))
            except AdapterError as exc:
                if body.get("type") == "transaction":
                    issues.extend(exc.issues)
                else:
                    parsed.append(_failed_entry(index, exc))
        if issues:
            raise InvalidRequestError(issues=issues)
        return parsed

    def _parse_entry(self, index: int, raw: dict[str, Any]) -> _Entry:
        path = f"Bundle.entry[{index}]"
        request = raw.get("request")
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise InvalidRequestError(
                f"{path}.request with method and url is required", expression=f"{path}.request"
            )
        method, url = request["method"], request["url"]
        if method not in _ORDER:
            raise MethodNotAllowedError(
                f"{path}.request.method {method} is not supported here (POST, PUT and GET are)",
                expression=f"{path}.request.method",
            )
        split = urlsplit(url)
        if split.scheme or split.netloc:  # an absolute URL: accept ours, refuse anyone else's
            base = urlsplit(self.resources.base_url)
            if (split.scheme, split.netloc) != (
                base.scheme,
                base.netloc,
            ) or not split.path.startswith(base.path + "/"):
                raise InvalidRequestError(
                    f"{path}.request.url '{url}' is not on this server",
                    expression=f"{path}.request.url",
                )
            split = urlsplit(url[len(self.resources.base_url) + 1 :])
        segments = [s for s in split.path.split("/") if s]
        entry = _Entry(index, method, url, segments[0] if segments else "")
        entry.full_url = raw.get("fullUrl")
        url_issue = InvalidRequestError(
            f"{path}.request.url '{url}' does not fit a {method} entry",
            expression=f"{path}.request.url",
        )
        if not segments:
            raise url_issue
        try:
            require_served(entry.resource_type)
        except AdapterError as exc:
            raise type(exc)(str(exc), expression=f"{path}.request.url") from exc
        resource = raw.get("resource")
        if method in ("POST", "PUT"):
            if resource is None:
                raise InvalidRequestError(
                    f"{path}.resource is required for {method}", expression=f"{path}.resource"
                )
            try:
                check_body_type(resource, entry.resource_type)
            except AdapterError as exc:
                raise InvalidRequestError(
                    str(exc), expression=f"{path}.resource.resourceType"
                ) from exc
            entry.resource = resource
        if method == "POST":
            if len(segments) != 1 or split.query:
                raise url_issue
            entry.if_none_exist = request.get("ifNoneExist")
        elif method == "PUT":
            if len(segments) != 2 or not ID_PATTERN.match(segments[1]):
                raise url_issue
            entry.id = segments[1]
            if not isinstance(resource, dict) or resource.get("id") != entry.id:
                raise InvalidRequestError(
                    f"{path}.resource.id must equal the id in {path}.request.url ('{entry.id}')",
                    expression=f"{path}.resource.id",
                )
            entry.if_match = request.get("ifMatch")
        else:  # GET: read, vread or search
            if len(segments) == 1:
                entry.query = parse_qsl(split.query, keep_blank_values=True)
            elif len(segments) == 2:
                entry.id = segments[1]
            elif len(segments) == 4 and segments[2] == "_history":
                entry.id, entry.version = segments[1], segments[3]
            else:
                raise url_issue
        return entry

    # -- transaction --------------------------------------------------------------------------

    async def _transaction(
        self, entries: list[_Entry], return_resources: bool, guard: Guard
    ) -> dict[str, Any]:
        self._check_identities(entries)
        resolved = self._resolve(entries)
        if resolved.issues:
            raise UnprocessableEntityError(issues=list(resolved.issues))
        service = self.resources
        writes = sorted((e for e in entries if e.method != "GET"), key=lambda e: _ORDER[e.method])
        async with service.store.transaction() as tx:
            mapping = await self._assign_ids(tx, entries, guard, resolved)
            pending = frozenset(
                f"{e.resource_type}/{e.id}"
                for e in entries
                if e.method in ("POST", "PUT") and e.id and not e.response
            )
            keys = _entry_keys(entries)
            for entry in entries:
                if entry.resource is not None:
                    entry.resource = _rewritten(entry, resolved, keys, mapping)
            for entry in writes:
                await self._execute(tx, entry, pending, return_resources, guard, validate=False)
            await self._run_hooks(tx, writes, return_resources)
            for entry in entries:
                if entry.method == "GET":
                    await self._execute(tx, entry, pending, return_resources, guard, validate=False)
        log.info("transaction committed with %d entries", len(entries))
        await service.hooks.after_commit([e.result for e in writes if e.result is not None])
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [e.response for e in entries],
        }

    async def _run_hooks(
        self, tx: StoreTransaction, writes: list[_Entry], return_resources: bool
    ) -> None:
        """Let the workflow check and follow up the writes, then answer with what is stored."""
        done = [e for e in writes if e.result is not None]
        results = await self.resources.hooks.after_writes(tx, [e.result for e in done if e.result])
        for entry, result in zip(done, results, strict=True):
            entry.result = result
            entry.response = bundles.write_response_entry(
                self.resources.base_url,
                result.resource,
                entry.status,
                include_resource=return_resources,
            )

    def _resolve(self, entries: list[_Entry]) -> BundleReferences:
        """R4 bundle.html#references over the entries (positions in `entries` = their indexes)."""
        return resolve_bundle_references(
            [(e.full_url, e.resource) for e in entries], server_base=self.resources.base_url
        )

    def _check_identities(self, entries: list[_Entry]) -> None:
        duplicates = duplicate_fullurl_issues([e.full_url for e in entries])
        if duplicates:
            raise UnprocessableEntityError(issues=duplicates)
        issues: list[Issue] = []
        targets: dict[str, int] = {}
        for entry in entries:
            if entry.method == "PUT":
                key = f"{entry.resource_type}/{entry.id}"
                if key in targets:
                    issues.append(
                        Issue(
                            "invalid",
                            f"{entry.path} writes {key}, which entry {targets[key]} writes too",
                            f"{entry.path}.request.url",
                        )
                    )
                targets.setdefault(key, entry.index)
        if issues:
            raise InvalidRequestError(issues=issues)

    async def _assign_ids(
        self,
        tx: StoreTransaction,
        entries: list[_Entry],
        guard: Guard,
        resolved: BundleReferences | None = None,
    ) -> dict[str, str]:
        """Give every POST an id (or the resource its condition matches); map fullUrls to `Type/id`.

        POSTs are taken in reference order, so a condition computed from a resource (the workflow's
        implicit ones) sees the ids of the entries it references.
        """
        mapping: dict[str, str] = {
            e.full_url: f"{e.resource_type}/{e.id}"
            for e in entries
            if e.method == "PUT" and e.full_url
        }
        fresh: set[str] = set()  # keys given to new resources here: nothing stored names them yet
        resolved = resolved or BundleReferences()
        posts = [e for e in entries if e.method == "POST"]
        for entry in _reference_order(posts, resolved):
            assert entry.resource is not None
            criteria = entry.if_none_exist or self.resources.hooks.implicit_condition(
                _rewritten(entry, resolved, _entry_keys(entries), mapping)
            )
            existing = None
            if criteria:
                try:
                    existing = await self.resources.find_conditional(
                        tx, entry.resource_type, criteria, guard=guard, new_keys=fresh
                    )
                except AdapterError as exc:
                    raise _located(exc, entry) from exc
            if existing is not None:
                try:
                    check_match_visible(guard, existing)
                    self.resources.check_same_patient(  # issue #16: no link across patients
                        existing,
                        _rewritten(entry, resolved, _entry_keys(entries), mapping),
                        entry.path,
                    )
                except AdapterError as exc:
                    raise _located(exc, entry) from exc
                entry.id = existing.id
                entry.response = bundles.write_response_entry(
                    self.resources.base_url, existing, "200 OK", include_resource=True
                )
            else:
                entry.id = self.resources.new_id()
                fresh.add(f"{entry.resource_type}/{entry.id}")
            if entry.full_url:
                mapping[entry.full_url] = f"{entry.resource_type}/{entry.id}"
        return mapping

    async def _execute(
        self,
        tx: StoreTransaction,
        entry: _Entry,
        pending: frozenset[str],
        return_resources: bool,
        guard: Guard,
        *,
        validate: bool,
    ) -> None:
        try:
            await self._execute_entry(
                tx, entry, pending, return_resources, guard, validate=validate
            )
        except AdapterError as exc:
            raise _located(exc, entry) from exc

    async def _execute_entry(
        self,
        tx: StoreTransaction,
        entry: _Entry,
        pending: frozenset[str],
        return_resources: bool,
        guard: Guard,
        *,
        validate: bool,
    ) -> None:
        service, base = self.resources, self.resources.base_url
        path = f"{entry.path}.resource"
        if entry.method == "POST":
            if entry.response:  # matched by ifNoneExist: nothing to write
                if not return_resources:
                    entry.response.pop("resource", None)
                return
            assert entry.resource is not None
            if validate:
                validate_resource(entry.resource, path=path)
            entry.result = await service.create_in(
                tx, entry.resource, path=path, pending=pending, id=entry.id, guard=guard
            )
            entry.status = "201 Created"
            entry.response = bundles.write_response_entry(
                base, entry.result.resource, entry.status, include_resource=return_resources
            )
        elif entry.method == "PUT":
            assert entry.resource is not None
            if validate:
                validate_resource(entry.resource, path=path)
            entry.result = await service.update_in(
                tx,
                entry.resource,
                if_match=entry.if_match,
                path=path,
                pending=pending,
                guard=guard,
            )
            entry.status = "201 Created" if entry.result.created else "200 OK"
            entry.response = bundles.write_response_entry(
                base, entry.result.resource, entry.status, include_resource=return_resources
            )
        else:
            entry.response = await self._read_entry(tx, entry, guard)

    async def _read_entry(
        self, tx: StoreTransaction, entry: _Entry, guard: Guard
    ) -> dict[str, Any]:
        service, base = self.resources, self.resources.base_url
        if entry.query is not None:
            query = service.parse_query(entry.resource_type, entry.query)
            page = await search_guarded(tx, query, guard)
            return {
                "resource": bundles.searchset(base, query, page),
                "response": {"status": "200 OK"},
            }
        assert entry.id is not None
        if entry.version is None:
            found = await tx.resources.read(entry.resource_type, entry.id)
        elif entry.version.isdigit():
            found = await tx.resources.vread(entry.resource_type, entry.id, int(entry.version))
        else:
            found = None
        if found is None or not guard.visible(found.content):
            raise NotFoundError(f"{entry.url} is not known", expression=f"{entry.path}.request.url")
        return {
            "fullUrl": f"{base}/{found.key}",
            "resource": found.content,
            "response": {"status": "200 OK", "etag": bundles.etag(found.version_id)},
        }

    # -- batch --------------------------------------------------------------------------------

    async def _batch(
        self, entries: list[_Entry], return_resources: bool, guard: Guard
    ) -> dict[str, Any]:
        resolved = self._resolve(entries)
        problems = resolved.issues + tuple(duplicate_fullurl_issues([e.full_url for e in entries]))
        written: dict[int, str] = {}  # entries stored so far: a later entry may reference them
        for entry in entries:
            if entry.response:  # failed while parsing
                continue
            try:
                _authorize(entry, guard)
                own = [i for i in problems if (i.expression or "").startswith(f"{entry.path}.")]
                if own:
                    raise UnprocessableEntityError(issues=own)
                async with self.resources.store.transaction(write=entry.method != "GET") as tx:
                    await self._assign_ids(tx, [entry], guard)
                    if entry.resource is not None:
                        entry.resource = _rewritten(
                            entry, resolved, {**written, **_entry_keys([entry])}, {}
                        )
                    await self._execute(
                        tx, entry, frozenset(), return_resources, guard, validate=True
                    )
                    if entry.result is not None:
                        await self._run_hooks(tx, [entry], return_resources)
            except AdapterError as exc:
                entry.response = _failure_response(_located(exc, entry))
                entry.result = None
            if entry.result is not None:
                written[entry.index] = entry.result.resource.key
                await self.resources.hooks.after_commit([entry.result])
        failed = sum(
            1
            for e in entries
            if not e.response.get("response", {}).get("status", "").startswith("2")
        )
        log.info("batch processed: %d entries, %d failed", len(entries), failed)
        return {
            "resourceType": "Bundle",
            "type": "batch-response",
            "entry": [e.response for e in entries],
        }


def _authorize(entry: _Entry, guard: Guard) -> None:
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


def _located(exc: AdapterError, entry: _Entry) -> AdapterError:
    """Issues without a location get the entry they came from, so the client knows which one."""
    for i, issue in enumerate(exc.issues):
        if issue.expression is None:
            exc.issues[i] = Issue(
                issue.code, f"{entry.path}: {issue.diagnostics}", entry.path, issue.severity
            )
    return exc


def _reference_order(posts: list[_Entry], resolved: BundleReferences) -> list[_Entry]:
    """POST entries ordered so that one comes after the entries its references resolve to
    (bundle order where there is no dependency, or a cycle)."""
    among = {e.index for e in posts}
    needs = {
        e.index: {t for (p, _), t in resolved.targets.items() if p == e.index} & among - {e.index}
        for e in posts
    }
    ordered: list[_Entry] = []
    placed: set[int] = set()
    remaining = list(posts)
    while remaining:
        ready = next((e for e in remaining if needs[e.index] <= placed), remaining[0])
        remaining.remove(ready)
        ordered.append(ready)
        placed.add(ready.index)
    return ordered


def _entry_keys(entries: list[_Entry]) -> dict[int, str]:
    """Entry index -> the `Type/id` the entry is (being) stored as, once it has one."""
    return {
        e.index: f"{e.resource_type}/{e.id}"
        for e in entries
        if e.method in ("POST", "PUT") and e.id
    }


def _rewritten(
    entry: _Entry, resolved: BundleReferences, keys: dict[int, str], mapping: dict[str, str]
) -> Any:
    """The entry's resource with its references to other entries naming their stored keys, and
    `urn:` fullUrls rewritten wherever else they appear (uri elements, narrative links)."""
    resource = entry.resource
    if resolved.targets:
        resource = rewrite_entry_references(resource, entry.index, resolved, keys)
    return rewrite_references(resource, mapping) if mapping else resource


def _without_resource(entry: Any) -> Any:
    return {k: v for k, v in entry.items() if k != "resource"} if isinstance(entry, dict) else entry


def _failure_response(exc: AdapterError) -> dict[str, Any]:
    return {"response": {"status": str(exc.status_code), "outcome": make_outcome(exc.issues)}}


def _failed_entry(index: int, exc: AdapterError) -> _Entry:
    entry = _Entry(index, "GET", "", "")
    entry.response = _failure_response(exc)
    return entry
