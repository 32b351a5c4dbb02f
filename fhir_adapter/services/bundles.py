"""Transaction and batch Bundles at `POST /fhir` (R4 http.html#transaction): the entries are read
in services/bundle_entries.py and run here."""

from __future__ import annotations

import logging
from typing import Any

from fhir_adapter.access.guard import UNRESTRICTED, Guard
from fhir_adapter.errors import (
    AdapterError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnprocessableEntityError,
)
from fhir_adapter.fhir import bundles
from fhir_adapter.fhir.bundle_references import (
    BundleReferences,
    duplicate_fullurl_issues,
    resolve_bundle_references,
)
from fhir_adapter.fhir.elements import local_key
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.validation import validate_resource
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.services.access_rules import check_match_visible, search_guarded
from fhir_adapter.services.bundle_entries import (
    ORDER,
    Entry,
    authorize,
    entry_keys,
    failure_response,
    located,
    parse_entries,
    reference_order,
    rewritten,
    without_resource,
)
from fhir_adapter.services.reference_check import stored_references
from fhir_adapter.services.resources import ResourceService, matches_locked, only_match

log = logging.getLogger(__name__)


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
            entries = parse_entries(body, self.resources.base_url)
            for entry in entries:  # all or nothing: one entry the caller may not make stops all
                authorize(entry, guard)
            return await self._transaction(entries, return_resources, guard)
        if body.get("type") == "batch":
            # Entries are validated one by one, so one bad entry fails alone.
            validate_resource({**body, "entry": [without_resource(e) for e in entries]})
            return await self._batch(
                parse_entries(body, self.resources.base_url), return_resources, guard
            )
        validate_resource(body)
        raise InvalidRequestError(
            f"Bundle.type '{body.get('type')}' cannot be processed here; use transaction or batch",
            expression="Bundle.type",
        )

    # -- transaction --------------------------------------------------------------------------

    async def _transaction(
        self, entries: list[Entry], return_resources: bool, guard: Guard
    ) -> dict[str, Any]:
        self._check_identities(entries)
        resolved = self._resolve(entries)
        if resolved.issues:
            raise UnprocessableEntityError(issues=list(resolved.issues))
        service = self.resources
        writes = sorted((e for e in entries if e.method != "GET"), key=lambda e: ORDER[e.method])
        async with service.store.transaction() as tx:
            mapping = await self._assign_ids(tx, entries, guard, resolved)
            pending = frozenset(
                f"{e.resource_type}/{e.id}"
                for e in entries
                if e.method in ("POST", "PUT") and e.id and not e.response
            )
            keys = entry_keys(entries)
            for entry in entries:
                if entry.resource is not None:
                    entry.resource = rewritten(entry, resolved, keys, mapping)
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
        self, tx: StoreTransaction, writes: list[Entry], return_resources: bool
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

    def _resolve(self, entries: list[Entry]) -> BundleReferences:
        """R4 bundle.html#references over the entries (positions in `entries` = their indexes)."""
        return resolve_bundle_references(
            [(e.full_url, e.resource) for e in entries], server_base=self.resources.base_url
        )

    def _check_identities(self, entries: list[Entry]) -> None:
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
        entries: list[Entry],
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
        matched = await self._match_conditions(tx, entries, posts, guard)
        for entry in reference_order(posts, resolved):
            assert entry.resource is not None
            content: dict[str, Any] | None = None  # the entry as stored now: made once, if wanted
            criteria = entry.if_none_exist
            if not criteria:
                content = rewritten(entry, resolved, entry_keys(entries), mapping)
                criteria = self.resources.hooks.implicit_condition(content)
            existing = matched.get(entry.index)
            if criteria and not entry.if_none_exist:  # computed from ids given above: one by one
                try:
                    existing = await self.resources.find_conditional(
                        tx, entry.resource_type, criteria, guard=guard, new_keys=fresh
                    )
                except AdapterError as exc:
                    raise located(exc, entry) from exc
            if existing is not None:
                try:
                    check_match_visible(guard, existing)
                    self.resources.check_same_patient(  # issue #16: no link across patients
                        existing,
                        content
                        if content is not None
                        else rewritten(entry, resolved, entry_keys(entries), mapping),
                        entry.path,
                    )
                except AdapterError as exc:
                    raise located(exc, entry) from exc
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

    async def _match_conditions(
        self, tx: StoreTransaction, entries: list[Entry], posts: list[Entry], guard: Guard
    ) -> dict[int, StoredResource | None]:
        """What each POST's `ifNoneExist` matches (by entry index): one search for the whole
        Bundle, as these criteria do not depend on the ids given here, and for the criteria that
        matched nothing one lock statement and one search more (`matches_locked`). The first
        search also finds which stored resources the entries reference (their reference checks
        then ask nothing)."""
        conditional = [e for e in posts if e.if_none_exist]
        queries = []
        for entry in conditional:  # criteria that cannot be searched are the entry's fault
            assert entry.if_none_exist is not None
            try:
                queries.append(
                    self.resources.conditional_query(
                        entry.resource_type, entry.if_none_exist, guard
                    )
                )
            except AdapterError as exc:
                raise located(exc, entry) from exc
        found: dict[int, StoredResource | None] = {}
        base = self.resources.base_url
        own = {local_key(e.full_url, base) for e in entries} | {
            (e.resource_type, e.id) for e in entries if e.id
        }  # the Bundle's own entries: not looked for among the stored ones
        referenced = [
            key
            for key in stored_references([e.resource for e in posts if e.resource], base)
            if key not in own
        ]
        matched = await tx.resources.matches(queries, known=referenced)
        matched = await matches_locked(tx, queries, matched)
        for entry, query, matches in zip(conditional, queries, matched, strict=True):
            try:
                found[entry.index] = only_match(query, entry.if_none_exist or "", matches)
            except AdapterError as exc:
                raise located(exc, entry) from exc
        return found

    async def _execute(
        self,
        tx: StoreTransaction,
        entry: Entry,
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
            raise located(exc, entry) from exc

    async def _execute_entry(
        self,
        tx: StoreTransaction,
        entry: Entry,
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

    async def _read_entry(self, tx: StoreTransaction, entry: Entry, guard: Guard) -> dict[str, Any]:
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
        self, entries: list[Entry], return_resources: bool, guard: Guard
    ) -> dict[str, Any]:
        resolved = self._resolve(entries)
        problems = resolved.issues + tuple(duplicate_fullurl_issues([e.full_url for e in entries]))
        written: dict[int, str] = {}  # entries stored so far: a later entry may reference them
        for entry in entries:
            if entry.response:  # failed while parsing
                continue
            try:
                authorize(entry, guard)
                own = [i for i in problems if (i.expression or "").startswith(f"{entry.path}.")]
                if own:
                    raise UnprocessableEntityError(issues=own)
                async with self.resources.store.transaction(write=entry.method != "GET") as tx:
                    await self._assign_ids(tx, [entry], guard)
                    if entry.resource is not None:
                        entry.resource = rewritten(
                            entry, resolved, {**written, **entry_keys([entry])}, {}
                        )
                    await self._execute(
                        tx, entry, frozenset(), return_resources, guard, validate=True
                    )
                    if entry.result is not None:
                        await self._run_hooks(tx, [entry], return_resources)
            except AdapterError as exc:
                entry.response = failure_response(located(exc, entry))
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
