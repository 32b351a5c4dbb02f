"""DirectoryClient: the Plan-Net searches of contract §5 over HTTP, with timeouts, bounded retries
with backoff, narrow searches whose `next` links are followed until enough candidates are found
(a directory's size is never an outage; a `next` link that repeats is), and a short-lived cache."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from datetime import datetime
from typing import Any

import httpx
import orjson
from cachetools import TTLCache

from fhir_adapter import telemetry
from fhir_adapter.codes import NPI
from fhir_adapter.directory.plannet import provider_from_role
from fhir_adapter.errors import DirectoryUnavailableError
from fhir_adapter.fhir.elements import specialty_search
from fhir_adapter.policy.facts import Provider

log = logging.getLogger(__name__)
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DirectoryClient:
    """Searches one Plan-Net directory for the providers of one network."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        network: str,
        attempts: int = 3,
        backoff_seconds: float = 0.2,
        max_pages: int = 1000,
        page_size: int = 100,
        cache_seconds: float = 60.0,
        cache_size: int = 1024,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.network = network
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_pages = max_pages  # a safety net against a directory that pages forever
        self.page_size = page_size
        self._cache: TTLCache[str, dict[str, Any]] = TTLCache(maxsize=cache_size, ttl=cache_seconds)
        # The URL each search builds: httpx takes longer to build one than the cache to answer.
        self._urls: TTLCache[tuple[Any, ...], str] = TTLCache(maxsize=cache_size, ttl=cache_seconds)

    @property
    def network_reference(self) -> str:
        return self.network if "://" in self.network else f"{self.base_url}/{self.network}"

    async def providers_with_specialty(
        self,
        specialties: Iterable[str],
        *,
        today: datetime,
        enough: int | None = None,
        out_of_network: bool = False,
    ) -> list[Provider]:
        """Active PractitionerRoles with one of the specialties, in network or not; with `enough`,
        the search stops once it has that many (out-of-network ones, with `out_of_network`)."""
        params = {
            "specialty": specialty_search(specialties),
            "active": "true",
            "_count": str(self.page_size),
        }

        def counted(p: Provider) -> bool:
            return not (out_of_network and p.in_network)

        return await self._roles(params, today=today, enough=enough, counted=counted)

    async def in_network_providers(
        self,
        specialties: Iterable[str],
        *,
        today: datetime,
        organization: str | None = None,
        enough: int | None = None,
    ) -> list[Provider]:
        """Contract §5: PractitionerRole?specialty=…&network=…&active=true (of one organization,
        when given) with practitioners, endpoints, organizations and locations; with `enough`, the
        search stops once it has that many in-network roles."""
        params = {
            "specialty": specialty_search(specialties),
            "network": self.network,
            "active": "true",
            "_count": str(self.page_size),
        }
        if organization:
            params["organization"] = organization.removeprefix(self.base_url + "/")

        def counted(p: Provider) -> bool:
            return p.in_network

        found = await self._roles(params, today=today, enough=enough, counted=counted)
        return [p for p in found if p.in_network]

    async def provider(self, reference: str, *, today: datetime) -> Provider | None:
        """The Provider for a PractitionerRole or Practitioner reference (absolute, or relative to the
        directory); for a Practitioner, its in-network role if it has one."""
        relative = (
            reference[len(self.base_url) + 1 :]
            if reference.startswith(self.base_url + "/")
            else reference
        )
        if "://" in relative:
            return None  # another server's resource: we cannot look it up
        kind, _, id = relative.partition("/")
        if kind == "PractitionerRole":
            found = await self._roles({"_id": id}, today=today)
        elif kind == "Practitioner":
            found = await self._roles({"practitioner": f"Practitioner/{id}"}, today=today)
        else:
            return None
        return _prefer_in_network(found)

    async def read(self, reference: str) -> dict[str, Any] | None:
        """The directory's resource at `reference` (absolute, or relative to the directory), or
        None when it is another server's or the directory does not list it."""
        relative = reference.removeprefix(self.base_url + "/")
        kind, _, id = relative.partition("/")
        if "://" in relative or not kind or not id or "/" in id:
            return None
        bundle = await self._get(kind, {"_id": id})
        return next(
            (
                dict(e["resource"])
                for e in bundle.get("entry") or []
                if _resource_is(e, kind) and e["resource"].get("id") == id
            ),
            None,
        )

    async def roles_by_npi(self, npi: str, *, today: datetime) -> list[Provider]:
        """Contract §5: Practitioner?identifier=npi, then PractitionerRole?practitioner=…"""
        bundle = await self._get("Practitioner", {"identifier": f"{NPI}|{npi}"})
        ids = [
            e["resource"]["id"]
            for e in bundle.get("entry") or []
            if _resource_is(e, "Practitioner")
        ]
        roles: list[Provider] = []
        for id in ids[:5]:
            roles += await self._roles({"practitioner": f"Practitioner/{id}"}, today=today)
        return roles

    # -- plumbing ------------------------------------------------------------------------------

    async def _roles(
        self,
        params: Mapping[str, str],
        *,
        today: datetime,
        enough: int | None = None,
        counted: Callable[[Provider], bool] = lambda p: True,
    ) -> list[Provider]:
        """The matching roles, page by page (each page carries what its roles include), until the
        last page or until `enough` of them are `counted`."""
        query = {**params, "_include": _ROLE_INCLUDES}
        providers: list[Provider] = []
        async with aclosing(self._pages("PractitionerRole", query)) as pages:
            async for page in pages:
                providers += self._providers(page, today=today)
                if enough is not None and sum(1 for p in providers if counted(p)) >= enough:
                    break
        return providers

    def _providers(self, entries: list[dict[str, Any]], *, today: datetime) -> list[Provider]:
        resolve: dict[str, Mapping[str, Any]] = {}
        roles: list[tuple[str, Mapping[str, Any]]] = []
        for entry in entries:
            resource = entry.get("resource") or {}
            kind, id = resource.get("resourceType"), resource.get("id")
            if not kind or not id:
                continue
            url = entry.get("fullUrl") or f"{self.base_url}/{kind}/{id}"
            resolve[f"{kind}/{id}"] = resource
            resolve[url] = resource
            if (
                kind == "PractitionerRole"
                and (entry.get("search") or {}).get("mode", "match") == "match"
            ):
                roles.append((url, resource))
        return [
            provider_from_role(
                role, role_url=url, resolve=resolve, network=self.network_reference, today=today
            )
            for url, role in roles
        ]

    async def _pages(
        self, resource_type: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Each page's entries, following `next` links. A link that repeats, or more pages than
        any directory could need, is a broken directory (unavailable); size alone never is."""
        bundle = await self._get(resource_type, params)
        yield list(bundle.get("entry") or [])
        followed: set[str] = set()
        while next_url := _next_link(bundle):
            if next_url in followed:
                raise DirectoryUnavailableError("the directory kept paging: its next link repeats")
            if len(followed) + 1 >= self.max_pages:
                raise DirectoryUnavailableError(
                    f"the directory kept paging past {self.max_pages} pages"
                )
            followed.add(next_url)
            bundle = await self._get_url(next_url)
            yield list(bundle.get("entry") or [])

    async def _get(self, resource_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
        key = (
            resource_type,
            *((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()),
        )
        url = self._urls.get(key)
        if url is None:
            request = self.http.build_request(
                "GET", f"{self.base_url}/{resource_type}", params=params
            )
            url = self._urls[key] = str(request.url)
        return await self._get_url(url)

    async def _get_url(self, url: str) -> dict[str, Any]:
        cached = self._cache.get(url)  # only a valid URL was ever cached
        telemetry.directory_cache(hit=cached is not None)
        if cached is not None:
            return cached
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise DirectoryUnavailableError(f"the directory gave an invalid URL ({exc})") from exc
        last_problem = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self.http.get(url, headers={"Accept": "application/fhir+json"})
            except httpx.HTTPError as exc:
                last_problem = type(exc).__name__
                telemetry.directory_called("transient")
            else:
                if response.status_code == 200:
                    bundle = _parse_bundle(response.content)
                    if bundle is not None:
                        telemetry.directory_called("ok")
                        self._cache[url] = bundle
                        return bundle
                    last_problem = "an answer that is not a FHIR Bundle"
                    telemetry.directory_called("transient")
                elif response.status_code in _TRANSIENT_STATUS:
                    last_problem = f"HTTP {response.status_code}"
                    telemetry.directory_called("transient")
                else:
                    telemetry.directory_called("error")
                    raise DirectoryUnavailableError(
                        f"the directory answered HTTP {response.status_code}"
                    )
            if attempt < self.attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter spreads retries out
        log.warning("directory unavailable after %d attempts: %s", self.attempts, last_problem)
        raise DirectoryUnavailableError(f"the directory is unavailable ({last_problem})")


_ROLE_INCLUDES = [
    "PractitionerRole:practitioner",
    "PractitionerRole:endpoint",
    "PractitionerRole:organization",
    "PractitionerRole:location",
]


def _next_link(bundle: Mapping[str, Any]) -> str | None:
    return next(
        (
            str(link["url"])
            for link in bundle.get("link") or []
            if link.get("relation") == "next" and link.get("url")
        ),
        None,
    )


def _parse_bundle(content: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        return None
    if not isinstance(data.get("entry", []), list) or not isinstance(data.get("link", []), list):
        return None
    if not all(
        isinstance(e, dict) and isinstance(e.get("resource", {}), dict)
        for e in data.get("entry", [])
    ):
        return None
    if not all(
        isinstance(link, dict) and isinstance(link.get("url", ""), str)
        for link in data.get("link", [])
    ):
        return None
    return data


def _resource_is(entry: Mapping[str, Any], kind: str) -> bool:
    resource = entry.get("resource")
    return (
        isinstance(resource, dict)
        and resource.get("resourceType") == kind
        and bool(resource.get("id"))
    )


def _prefer_in_network(found: list[Provider]) -> Provider | None:
    if not found:
        return None
    return next((p for p in found if p.in_network), found[0])
