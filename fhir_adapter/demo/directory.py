"""The built-in demo provider directory (contract §1): a small Plan-Net-shaped FHIR search service
seeded from examples/directory, served at /directory/fhir when no directory URL is configured."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.demo.responses import fhir_json
from fhir_adapter.errors import InvalidRequestError, NotFoundError
from fhir_adapter.fhir.elements import ResourceKey, role_networks

DirectoryData = dict[str, dict[str, dict[str, Any]]]  # type -> id -> resource
_INCLUDES = {
    "PractitionerRole:practitioner": "practitioner",
    "PractitionerRole:organization": "organization",
    "PractitionerRole:endpoint": "endpoint",
    "PractitionerRole:location": "location",
    "PractitionerRole:network": "network",
}


def load_directory(path: Path) -> DirectoryData:
    """Read a collection Bundle of directory resources."""
    bundle = json.loads(path.read_text())
    data: DirectoryData = {}
    for entry in bundle.get("entry") or []:
        resource = entry["resource"]
        data.setdefault(resource["resourceType"], {})[resource["id"]] = resource
    return data


def _tokens(values: Iterable[Any]) -> set[tuple[str | None, str]]:
    found: set[tuple[str | None, str]] = set()
    for value in values:
        if isinstance(value, str):
            found.add((None, value))
        elif isinstance(value, bool):
            found.add((None, "true" if value else "false"))
        elif isinstance(value, dict):
            for coding in value.get("coding") or [value]:
                code = coding.get("code") or coding.get("value")
                if code:
                    found.add((coding.get("system"), code))
    return found


def _token_match(wanted: str, values: Iterable[Any]) -> bool:
    present = _tokens(values)
    for option in wanted.split(","):
        system, bar, code = option.rpartition("|")
        if any(c == code and (not bar or s == system) for s, c in present):
            return True
    return False


def _ref_match(wanted: str, references: Iterable[str]) -> bool:
    """`Type/id`, a bare id or an absolute URL against the references a resource holds."""
    refs = list(references)
    for option in wanted.split(","):
        if "/" in option:
            tail = "/".join(option.split("/")[-2:])
            if any("/".join(r.split("/")[-2:]) == tail for r in refs):
                return True
        elif any(r.split("/")[-1] == option for r in refs):
            return True
    return False


def _refs(resource: Mapping[str, Any], element: str) -> list[str]:
    value = resource.get(element)
    items = value if isinstance(value, list) else [value] if value else []
    return [i["reference"] for i in items if isinstance(i, dict) and i.get("reference")]


Matcher = Callable[[Mapping[str, Any], str], bool]
_SEARCH: dict[str, dict[str, Matcher]] = {
    "PractitionerRole": {
        "specialty": lambda r, v: _token_match(v, r.get("specialty") or []),
        "network": lambda r, v: _ref_match(v, role_networks(r)),
        "practitioner": lambda r, v: _ref_match(v, _refs(r, "practitioner")),
        "organization": lambda r, v: _ref_match(v, _refs(r, "organization")),
        "endpoint": lambda r, v: _ref_match(v, _refs(r, "endpoint")),
        "active": lambda r, v: _token_match(v, [r.get("active", True)]),
        "role": lambda r, v: _token_match(v, r.get("code") or []),
        "location": lambda r, v: _ref_match(v, _refs(r, "location")),
    },
    "Practitioner": {
        "identifier": lambda r, v: _token_match(v, r.get("identifier") or []),
        "family": lambda r, v: any(
            n.get("family", "").lower().startswith(v.lower()) for n in r.get("name") or []
        ),
    },
    "Organization": {
        "identifier": lambda r, v: _token_match(v, r.get("identifier") or []),
        "type": lambda r, v: _token_match(v, r.get("type") or []),
        "partof": lambda r, v: _ref_match(v, _refs(r, "partOf")),
    },
    "Endpoint": {"organization": lambda r, v: _ref_match(v, _refs(r, "managingOrganization"))},
}


DEMO_ORIGIN = (
    "http://127.0.0.1:8080"  # the origin the seed data's Endpoint addresses are written for
)


def directory_router(
    data: DirectoryData, *, page_size: int = 10, max_page_size: int | None = None
) -> APIRouter:
    """Routes for `GET {dir}/{type}` (search) and `GET {dir}/{type}/{id}` (read).

    Endpoint addresses in the seed data point at the demo EHR inboxes of this same server; they are
    answered with the origin the directory is actually served from.
    """
    router = APIRouter(tags=["demo directory"])

    @router.get("/{resource_type}")
    async def search(resource_type: str, request: Request) -> Response:
        matchers = _SEARCH.get(resource_type)
        if matchers is None:
            raise NotFoundError(f"The demo directory has no {resource_type} resources")
        params = list(request.query_params.multi_items())
        query = _query(data, resource_type, matchers, params, page_size, max_page_size)
        page = query.matches[query.offset : query.offset + query.count]
        root = _base(request)
        entries = [
            {
                "fullUrl": f"{root}/{resource_type}/{r['id']}",
                "resource": _localized(r, request),
                "search": {"mode": "match"},
            }
            for r in page
        ]
        entries += _included(data, page, query.includes, root, request, entries)
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(query.matches),
            "link": _links(f"{root}/{resource_type}", params, query),
            "entry": entries,
        }
        return fhir_json(bundle)

    @router.get("/{resource_type}/{id}")
    async def read(resource_type: str, id: str, request: Request) -> Response:
        resource = data.get(resource_type, {}).get(id)
        if resource is None:
            raise NotFoundError(f"{resource_type}/{id} is not in the demo directory")
        return fhir_json(_localized(resource, request))

    return router


def _base(request: Request) -> str:
    """Where the router is mounted (the demo directory at /directory/fhir, or elsewhere)."""
    mounted = request.url.path.rsplit("/", 1)[0]
    return str(request.base_url).rstrip("/") + mounted


def _localized(resource: dict[str, Any], request: Request) -> dict[str, Any]:
    address = resource.get("address")
    if resource.get("resourceType") == "Endpoint" and isinstance(address, str):
        origin = str(request.base_url).rstrip("/")
        return {**resource, "address": address.replace(DEMO_ORIGIN, origin, 1)}
    return resource


@dataclass
class _Query:
    """A search's matches (all pages), the page it asks for and its `_include`s."""

    matches: list[dict[str, Any]]
    includes: list[str]
    offset: int
    count: int


def _query(
    data: DirectoryData,
    resource_type: str,
    matchers: Mapping[str, Matcher],
    params: list[tuple[str, str]],
    page_size: int,
    max_page_size: int | None,
) -> _Query:
    query = _Query(list(data.get(resource_type, {}).values()), [], 0, page_size)
    for name, value in params:
        if name == "_include":
            query.includes.append(value)
        elif name == "_offset":
            query.offset = int(value) if value.isdigit() else 0
        elif name == "_count":
            count = int(value) if value.isdigit() and int(value) > 0 else page_size
            query.count = min(count, max_page_size or count)  # servers cap _count
        elif name == "_id":
            query.matches = [m for m in query.matches if m["id"] in value.split(",")]
        elif name in matchers:
            query.matches = [m for m in query.matches if matchers[name](m, value)]
        elif not name.startswith("_"):
            raise InvalidRequestError(
                f"The demo directory does not search {resource_type} by '{name}'"
            )
    return query


def _included(
    data: DirectoryData,
    page: list[dict[str, Any]],
    includes: list[str],
    root: str,
    request: Request,
    matched: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The `_include` entries for a page: each target once, and none already matched."""
    seen = {e["fullUrl"] for e in matched}
    entries: list[dict[str, Any]] = []
    for include in includes:
        element = _INCLUDES.get(include)
        for resource in page:
            refs = (
                list(role_networks(resource))
                if element == "network"
                else _refs(resource, element or "")
            )
            for ref in refs:
                kind, id = ResourceKey.parse(ref)
                target = data.get(kind, {}).get(id)
                url = f"{root}/{kind}/{id}"
                if target and url not in seen:
                    seen.add(url)
                    entries.append(
                        {
                            "fullUrl": url,
                            "resource": _localized(target, request),
                            "search": {"mode": "include"},
                        }
                    )
    return entries


def _links(url: str, params: list[tuple[str, str]], query: _Query) -> list[dict[str, str]]:
    """`self`, and `next` while matches remain past this page."""
    links = [{"relation": "self", "url": f"{url}?{urlencode(params)}"}]
    if query.offset + query.count < len(query.matches):
        kept = [(k, v) for k, v in params if k != "_offset"]
        next_params = [*kept, ("_offset", str(query.offset + query.count))]
        links.append({"relation": "next", "url": f"{url}?{urlencode(next_params)}"})
    return links
