"""Probes and metrics for whoever runs the service (issue #13, docs/observability.md).

`/healthz`: the process answers (no database). `/readyz`: the database answers and its schema is
at this release's migration head; else 503 with an OperationOutcome naming what is not ready.
`/metrics`: Prometheus text, only from the addresses FHIR_ADAPTER_METRICS_ALLOW lists.

No token, no PHI, outside the audit trail (which covers /fhir) and outside the rate limits
(which apply to authenticated FHIR calls and the token endpoint)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fhir_adapter.config import Settings
from fhir_adapter.errors import ForbiddenError, TemporarilyUnavailableError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.telemetry import exposition, readiness
from fhir_adapter.telemetry.queues import QueueStats


def router(settings: Settings) -> APIRouter:
    """The probes, and /metrics when FHIR_ADAPTER_METRICS_ENABLED (else it is a 404)."""
    probes = APIRouter(tags=["operations"], include_in_schema=False)
    probes.add_api_route("/healthz", healthz, methods=["GET"])
    probes.add_api_route("/readyz", readyz, methods=["GET"])
    if settings.metrics_enabled:
        networks = exposition.parse_networks(settings.metrics_allow)

        async def metrics(request: Request) -> Response:
            client = request.client.host if request.client else None
            if not exposition.allowed(client, networks):
                raise ForbiddenError("/metrics is not open to this address")
            stats = _queue_stats(request, settings)
            if stats is not None:
                await stats.refresh()
            body = exposition.render(*([stats] if stats is not None else []))
            return Response(body, media_type=exposition.CONTENT_TYPE)

        probes.add_api_route("/metrics", metrics, methods=["GET"])
    return probes


async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    container = getattr(request.app.state, "container", None)
    engine = getattr(getattr(container, "store", None), "engine", None)
    found = await readiness.problems(engine)
    if found:
        raise TemporarilyUnavailableError(
            issues=[Issue(code="transient", diagnostics=problem) for problem in found]
        )
    return JSONResponse({"status": "ready"})


def _queue_stats(request: Request, settings: Settings) -> QueueStats | None:
    """One collector per app, made on the first scrape (the store exists only after start)."""
    state = request.app.state
    stats: QueueStats | None = getattr(state, "queue_stats", None)
    if stats is None:
        container = getattr(state, "container", None)
        engine = getattr(getattr(container, "store", None), "engine", None)
        if engine is None or container is None:
            return None
        stats = QueueStats(
            engine, container.workflow.clock, cache_seconds=settings.metrics_cache_seconds
        )
        state.queue_stats = stats
    return stats
