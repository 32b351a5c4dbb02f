"""create_app: the FastAPI application, its middleware, routers and lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from fhir_adapter import __version__
from fhir_adapter.api import handlers
from fhir_adapter.api.fhir_http import check_negotiation
from fhir_adapter.api.hot_routes import HotReads
from fhir_adapter.api.middleware import (
    AccessLog,
    AuditLog,
    BodySizeLimit,
    CatchUnexpected,
    route_templates,
)
from fhir_adapter.api.routes import auth, health, metadata, operations, resources, system
from fhir_adapter.api.security import authenticate
from fhir_adapter.bootstrap import Container, build_container, demo_directory_file
from fhir_adapter.config import Settings
from fhir_adapter.fhir.resources import SERVED_TYPES, model_class
from fhir_adapter.review import routes as review
from fhir_adapter.services.background import run_background

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    """The service. Given a container (tests), it uses it; otherwise it builds one on start."""
    if settings is None:
        settings = container.settings if container else Settings()
    app = FastAPI(
        title="fhir-adapter",
        version=__version__,
        description="FHIR R4 adapter for the Second Medical Opinion policy",
        lifespan=_lifespan(settings, container),
        docs_url="/docs",
        redoc_url=None,
    )
    if container is not None:
        app.state.container = container
    handlers.install(app)
    _include_routers(app, settings)
    _add_middleware(app, settings)
    return app


def _lifespan(
    settings: Settings, container: Container | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Builds the container on start (unless one was given) with the background worker and the
    audit writer, and stops them on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if container is not None:
            yield
            return
        built = await build_container(settings)
        app.state.container = built
        built.workflow.context.closed_days()  # the holiday calendar, loaded before it is frozen
        settle_heap()
        stop = asyncio.Event()
        worker = (
            asyncio.create_task(
                run_background(
                    built.workflow.jobs,
                    built.delivery,
                    stop,
                    interval_seconds=settings.worker_interval_seconds,
                )
            )
            if settings.worker_enabled
            else None
        )
        auditor = asyncio.create_task(built.audit.run(stop))
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await auditor
            await built.aclose()

    return lifespan


def settle_heap() -> None:
    """Load what the first requests would (the FHIR models of every served type), then hide all
    that lives now from the garbage collector (`gc.freeze`): a full collection otherwise walks
    the quarter of a million objects of the libraries and models and stops every request in
    flight for 140 to 170 ms; with them frozen it walks a few tens of thousands (issue #13,
    docs/performance.md)."""
    for resource_type in SERVED_TYPES:
        model_class(resource_type)
    gc.collect()
    gc.freeze()


def _include_routers(app: FastAPI, settings: Settings) -> None:
    negotiated = [Depends(check_negotiation)]
    # Everything under /fhir needs a token except discovery; a router added here later is
    # protected by the same dependency unless it is deliberately listed as public.
    protected = [Depends(check_negotiation), Depends(authenticate)]
    methods = handlers.MethodTable()
    app.state.methods = methods  # the 405 handler's `Allow`: every method a URL supports

    def include(router: APIRouter, *, prefix: str, dependencies: list[Any] | None = None) -> None:
        app.include_router(router, prefix=prefix, dependencies=dependencies)
        methods.add(prefix, router, fhir=prefix == "/fhir")
        route_templates(app).update({id(r): prefix + getattr(r, "path", "") for r in router.routes})

    include(health.router(settings), prefix="")  # /healthz, /readyz, /metrics (issue #13)
    include(metadata.router, prefix="/fhir", dependencies=negotiated)
    include(auth.discovery, prefix="/fhir")
    include(auth.authorization, prefix="/auth")
    include(system.router, prefix="/fhir", dependencies=protected)
    include(operations.router, prefix="/fhir", dependencies=protected)
    include(resources.router, prefix="/fhir", dependencies=protected)
    # Issue #18: the read by id and the type search are matched first, past FastAPI's routing.
    app.router.routes.insert(
        0, HotReads(read=_route(resources.read), search=_route(resources.search))
    )
    # The review workspace: staff pages with their own cookie sessions (fhir_adapter/review/).
    app.mount("/review/static", review.static_files, name="review-static")
    include(review.router, prefix="/review")
    if settings.directory_url is None:  # contract §1: the built-in demo directory
        from fhir_adapter.demo.directory import directory_router, load_directory

        include(directory_router(load_directory(demo_directory_file())), prefix="/directory/fhir")
    if (
        settings.demo
    ):  # issue #16: the demo EHR inboxes (where the demo Endpoints point), on request
        from fhir_adapter.demo.ehr import ehr_router

        include(ehr_router(), prefix="/ehr")
        log.warning(
            "FHIR_ADAPTER_DEMO is on: demo EHR inboxes at /ehr (loopback only, in memory); "
            "not for production"
        )


def _route(endpoint: Callable[..., Any]) -> APIRoute:
    """The APIRoute serving `endpoint` in resources.router."""
    return next(
        r for r in resources.router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint
    )


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost last: access log with the security headers, CORS, audit, body limits, catch-all."""
    app.add_middleware(CatchUnexpected)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        timeout_seconds=settings.body_timeout_seconds,
        max_concurrent=settings.max_concurrent_bodies,
    )
    app.add_middleware(  # outside the body limit, so that 413 refusals are audited too
        AuditLog,
        trail=lambda: getattr(getattr(app.state, "container", None), "audit", None),
        clock=lambda: (app.state.container.workflow.clock)(),
        tokens=lambda: getattr(getattr(app.state, "container", None), "tokens", None),
    )
    if settings.cors_origins:  # off unless configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Accept",
                "If-Match",
                "If-None-Match",
                "If-None-Exist",
                "Prefer",
            ],
            expose_headers=["Location", "ETag", "Last-Modified", "Content-Location"],
        )
    # The access log also adds the security headers (one layer fewer, issue #18).
    app.add_middleware(AccessLog, hsts=settings.fhir_base_url.startswith("https://"))
