"""Every URL reaches the handler it reached before the hot reads got their own route (issue #18):
the read by id and the type search are matched first, outside FastAPI's router, and nothing
else may change hands. Each request here records the endpoint that answered it and the route
template its metrics carry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Match

from fhir_adapter.api.app import create_app
from fhir_adapter.api.hot_routes import HotReads
from fhir_adapter.api.middleware import route_template
from fhir_adapter.bootstrap import Container
from tests.conftest import BASE_URL
from tests.tokens import bearer

# (method, path) -> (the endpoint's module.qualname, the route template), as on main before.
ROUTES: dict[tuple[str, str], tuple[str | None, str]] = {
    ("GET", "/fhir/metadata"): ("fhir_adapter.api.routes.metadata.metadata", "/fhir/metadata"),
    ("GET", "/fhir/.well-known/smart-configuration"): (
        "fhir_adapter.api.routes.auth.smart_configuration",
        "/fhir/.well-known/smart-configuration",
    ),
    ("GET", "/fhir/Task/abc"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Task"): ("fhir_adapter.api.routes.resources.search", "/fhir/{resource_type}"),
    ("GET", "/fhir/ClaimResponse?patient=x"): (
        "fhir_adapter.api.routes.resources.search",
        "/fhir/{resource_type}",
    ),
    ("GET", "/fhir/Patient/p1"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/AuditEvent/x1"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/AuditEvent"): (
        "fhir_adapter.api.routes.resources.search",
        "/fhir/{resource_type}",
    ),
    ("GET", "/fhir/Foo/abc"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Foo"): ("fhir_adapter.api.routes.resources.search", "/fhir/{resource_type}"),
    ("GET", "/fhir/Task/bad%20id"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Task/"): (None, "unmatched"),
    ("GET", "/fhir/Task/abc/"): (None, "unmatched"),
    ("GET", "/fhir/task/abc"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Task/_search"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Task/_history"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/_history"): (
        "fhir_adapter.api.routes.resources.search",
        "/fhir/{resource_type}",
    ),
    ("GET", "/fhir/Task/abc/_history"): (
        "fhir_adapter.api.routes.resources.history",
        "/fhir/{resource_type}/{id}/_history",
    ),
    ("GET", "/fhir/Task/abc/_history/1"): (
        "fhir_adapter.api.routes.resources.vread",
        "/fhir/{resource_type}/{id}/_history/{version}",
    ),
    ("POST", "/fhir/Task/_search"): (
        "fhir_adapter.api.routes.resources.search_post",
        "/fhir/{resource_type}/_search",
    ),
    ("PUT", "/fhir/Task/abc"): (
        "fhir_adapter.api.routes.resources.update",
        "/fhir/{resource_type}/{id}",
    ),
    ("POST", "/fhir/Task"): ("fhir_adapter.api.routes.resources.create", "/fhir/{resource_type}"),
    ("DELETE", "/fhir/Task/abc"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("HEAD", "/fhir/Task/abc"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("PATCH", "/fhir/Task"): ("fhir_adapter.api.routes.resources.search", "/fhir/{resource_type}"),
    ("POST", "/fhir/Claim/$submit"): (
        "fhir_adapter.api.routes.operations.submit",
        "/fhir/Claim/$submit",
    ),
    ("GET", "/fhir/Claim/$submit"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("POST", "/fhir/Task/abc/$decide"): (
        "fhir_adapter.api.routes.operations.decide",
        "/fhir/Task/{id}/$decide",
    ),
    ("GET", "/fhir/MeasureReport/$pa-metrics"): (
        "fhir_adapter.api.routes.operations.pa_metrics",
        "/fhir/MeasureReport/$pa-metrics",
    ),
    ("GET", "/fhir/Task/$pa-metrics"): (
        "fhir_adapter.api.routes.resources.read",
        "/fhir/{resource_type}/{id}",
    ),
    ("GET", "/fhir/Subscription/abc/$status"): (
        "fhir_adapter.api.routes.operations.subscription_status",
        "/fhir/Subscription/{id}/$status",
    ),
    ("POST", "/fhir/Subscription/abc/$status"): (
        "fhir_adapter.api.routes.operations.subscription_status",
        "/fhir/Subscription/{id}/$status",
    ),
    ("GET", "/fhir/Subscription/abc/$events"): (
        "fhir_adapter.api.routes.operations.subscription_events",
        "/fhir/Subscription/{id}/$events",
    ),
    ("POST", "/fhir"): ("fhir_adapter.api.routes.system.process_bundle", "/fhir"),
    ("POST", "/fhir/"): ("fhir_adapter.api.routes.system.process_bundle", "/fhir/"),
    ("GET", "/fhir"): ("fhir_adapter.api.routes.system.process_bundle", "/fhir"),
    ("GET", "/fhir/"): ("fhir_adapter.api.routes.system.process_bundle", "/fhir/"),
    ("GET", "/healthz"): ("fhir_adapter.api.routes.health.healthz", "/healthz"),
    ("GET", "/readyz"): ("fhir_adapter.api.routes.health.readyz", "/readyz"),
    ("GET", "/metrics"): ("fhir_adapter.api.routes.health.router.<locals>.metrics", "/metrics"),
    ("GET", "/auth/jwks"): ("fhir_adapter.api.routes.auth.jwks", "/auth/jwks"),
    ("POST", "/auth/token"): ("fhir_adapter.api.routes.auth.token", "/auth/token"),
    ("GET", "/review"): ("fhir_adapter.review.routes.queue", "/review"),
    ("GET", "/docs"): ("fastapi.applications.FastAPI.setup.<locals>.swagger_ui_html", "unmatched"),
    ("GET", "/openapi.json"): ("fastapi.applications.FastAPI.setup.<locals>.openapi", "unmatched"),
    ("GET", "/directory/fhir/Organization"): (
        "fhir_adapter.demo.directory.directory_router.<locals>.search",
        "/directory/fhir/{resource_type}",
    ),
    ("GET", "/nowhere"): (None, "unmatched"),
}


@pytest.fixture
async def routed(container: Container) -> Any:
    app = create_app(container=container)
    seen: dict[str, Any] = {}

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        endpoint = scope.get("endpoint")
        seen["endpoint"] = (
            f"{endpoint.__module__}.{endpoint.__qualname__}" if endpoint is not None else None
        )
        seen["template"] = route_template(scope)

    transport = httpx.ASGITransport(app=recording)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL.removesuffix("/fhir"), headers=bearer(container)
    ) as http:
        yield http, seen


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_each_url_reaches_the_same_handler(routed: Any, method: str, path: str) -> None:
    http, seen = routed
    await http.request(method, path, content=b"{}" if method in ("POST", "PUT") else None)
    assert (seen["endpoint"], seen["template"]) == ROUTES[(method, path)]


def hot_scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


@pytest.mark.parametrize(
    ("method", "path", "root_path", "claimed"),
    [
        ("GET", "/fhir/Task/abc", "", "read"),
        ("GET", "/fhir/ClaimResponse", "", "search"),
        ("GET", "/proxy/fhir/Task/abc", "/proxy", "read"),
        ("HEAD", "/fhir/Task/abc", "", None),
        ("PUT", "/fhir/Task/abc", "", None),
        ("POST", "/fhir/Task", "", None),
        ("GET", "/fhir/Task/abc/_history", "", None),
        ("GET", "/fhir/Task/_search", "", None),
        ("GET", "/fhir/Task/$pa-metrics", "", None),
        ("GET", "/fhir/Task/", "", None),
        ("GET", "/fhir/Foo/abc", "", None),
        ("GET", "/fhir/_history", "", None),
        ("GET", "/fhir/metadata", "", None),
        ("GET", "/directory/fhir/Organization", "", None),
    ],
)
async def test_the_hot_route_claims_only_reads_and_searches_of_served_types(
    container: Container, method: str, path: str, root_path: str, claimed: str | None
) -> None:
    """What it does not claim goes to FastAPI's routes, whose checks and errors it keeps."""
    app = create_app(container=container)
    hot = app.router.routes[0]
    assert isinstance(hot, HotReads)
    match, child = hot.matches(hot_scope(method, path, root_path))
    if claimed is None:
        assert match is Match.NONE
    else:
        assert match is Match.FULL
        assert child["endpoint"].__name__ == claimed
        assert route_template({**child, "app": app}) in (
            "/fhir/{resource_type}/{id}",
            "/fhir/{resource_type}",
        )


async def test_the_hot_route_checks_as_the_router_did(routed: Any) -> None:
    """Negotiation before the token (406 before 401), then the token, then the read."""
    http, _ = routed
    xml = {"accept": "application/fhir+xml", "authorization": ""}
    assert (await http.get("/fhir/Task/abc", headers=xml)).status_code == 406
    assert (await http.get("/fhir/Task/abc", headers={"authorization": ""})).status_code == 401
    assert (await http.get("/fhir/Task/abc")).status_code == 404
    found = await http.get("/fhir/Task?_count=1")
    assert found.status_code == 200
    assert found.json()["resourceType"] == "Bundle"


async def test_the_openapi_document_is_the_one_without_the_hot_route(
    container: Container,
) -> None:
    with_hot, without = create_app(container=container), create_app(container=container)
    assert isinstance(without.router.routes.pop(0), HotReads)
    assert with_hot.openapi() == without.openapi()
    assert set(with_hot.openapi()["paths"]["/fhir/{resource_type}/{id}"]) == {"get", "put"}
