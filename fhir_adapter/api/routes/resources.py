"""Instance and type interactions for every served resource type (contract §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.api.fhir_http import (
    FhirResponse,
    is_pretty,
    prefer,
    read_resource_body,
    return_preference,
    stored_body,
    version_headers,
)
from fhir_adapter.api.security import GuardDep
from fhir_adapter.errors import UnsupportedMediaTypeError
from fhir_adapter.fhir import bundles
from fhir_adapter.fhir.outcome import information
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.services.request_checks import require_served

router = APIRouter(tags=["resources"])


@router.get("/{resource_type}", summary="Search")
async def search(
    resource_type: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    return await _search(
        resource_type, list(request.query_params.multi_items()), request, container, guard
    )


@router.post("/{resource_type}/_search", summary="Search with a form body")
async def search_post(
    resource_type: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    require_served(resource_type)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaTypeError("POST _search takes application/x-www-form-urlencoded")
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return await _search(
        resource_type, list(request.query_params.multi_items()) + form, request, container, guard
    )


async def _search(
    resource_type: str,
    params: list[tuple[str, str]],
    request: Request,
    container: ContainerDep,
    guard: GuardDep,
) -> Response:
    strict = prefer(request).get("handling") == "strict"
    query = container.resources.parse_query(resource_type, params, strict=strict)
    page = await container.resources.search(query, guard=guard)
    bundle = bundles.searchset(
        container.settings.fhir_base_url, query, page, body=_body_of(request)
    )
    return FhirResponse(bundle, pretty=is_pretty(request))


def _body_of(request: Request) -> Callable[[bundles.StoredResource], Any]:
    """How an answer carries a stored version: its stored JSON spliced in (issue #18), or, for
    `_pretty=true`, its content, so the answer is indented throughout."""
    return bundles.content_of if is_pretty(request) else stored_body


# The names "create" and "update" tell the 405 handler which routes are client writes.
@router.post(
    "/{resource_type}", name="create", summary="Create (If-None-Exist for a conditional create)"
)
async def create(
    resource_type: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    require_served(resource_type)
    body = await read_resource_body(request)
    result = await container.resources.create(
        resource_type, body, if_none_exist=request.headers.get("if-none-exist"), guard=guard
    )
    return _write_response(result, request, container)


@router.get("/{resource_type}/{id}", summary="Read")
async def read(
    resource_type: str, id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    stored = await container.resources.read(resource_type, id, guard=guard)
    headers = version_headers(stored)
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return FhirResponse(_body_of(request)(stored), headers=headers, pretty=is_pretty(request))


@router.put(
    "/{resource_type}/{id}", name="update", summary="Update (If-Match for a version-aware update)"
)
async def update(
    resource_type: str, id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    require_served(resource_type)
    body = await read_resource_body(request)
    result = await container.resources.update(
        resource_type, id, body, if_match=request.headers.get("if-match"), guard=guard
    )
    return _write_response(result, request, container)


@router.get("/{resource_type}/{id}/_history", summary="Instance history")
async def history(
    resource_type: str, id: str, request: Request, container: ContainerDep, guard: GuardDep
) -> Response:
    versions = await container.resources.history(resource_type, id, guard=guard)
    bundle = bundles.history(container.settings.fhir_base_url, versions, body=_body_of(request))
    return FhirResponse(bundle, pretty=is_pretty(request))


@router.get("/{resource_type}/{id}/_history/{version}", summary="Version read")
async def vread(
    resource_type: str,
    id: str,
    version: str,
    request: Request,
    container: ContainerDep,
    guard: GuardDep,
) -> Response:
    stored = await container.resources.vread(resource_type, id, version, guard=guard)
    headers = version_headers(stored)
    return FhirResponse(_body_of(request)(stored), headers=headers, pretty=is_pretty(request))


def _write_response(result: WriteResult, request: Request, container: ContainerDep) -> Response:
    stored = result.resource
    headers = version_headers(stored)
    headers["Location"] = (
        f"{container.settings.fhir_base_url}/{stored.key}/_history/{stored.version_id}"
    )
    status = 201 if result.created else 200
    preference = return_preference(request)
    body: Any
    if preference == "minimal":
        body = None
    elif preference == "OperationOutcome":
        verb = "created" if result.created else "updated" if stored.version_id > 1 else "found"
        body = information(f"{stored.key} {verb} (version {stored.version_id})")
    else:
        body = stored.content
    return FhirResponse(body, status, headers, pretty=is_pretty(request))
