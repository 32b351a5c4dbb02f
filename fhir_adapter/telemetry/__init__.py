"""Operational metrics of this process for Prometheus (issue #13): requests, decisions,
deliveries, directory calls, rate-limit store trouble. Not to be confused with
`fhir_adapter/metrics/`, the CMS-0057-F prior-authorization metrics the plan publishes.

Labels are small fixed sets (route templates, status classes, outcomes), never ids, paths or
anything a caller sent: a label value is a new time series, and no label may carry PHI.

With `serve --workers N` the CLI sets PROMETHEUS_MULTIPROC_DIR before any worker starts, so the
values below live in files that `/metrics` sums over every worker (telemetry/exposition.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds; the PAS budget is measured in seconds, reads in milliseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "fhir_adapter_http_requests",
    "HTTP requests answered, by method, route template and status class",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "fhir_adapter_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
DECISIONS = Counter(
    "fhir_adapter_decisions",
    "Decisions recorded on second-opinion requests (rules, reviewers, the deadline sweep)",
    ["outcome"],
)
DELIVERIES = Counter(
    "fhir_adapter_deliveries",
    "Delivery attempts from the outbox, by destination kind and result "
    "(delivered, retry: failed and queued again, failed: given up, a dead letter)",
    ["destination", "result"],
)
DIRECTORY_REQUESTS = Counter(
    "fhir_adapter_directory_requests",
    "HTTP calls to the provider directory, by result (ok, transient, error)",
    ["result"],
)
DIRECTORY_CACHE = Counter(
    "fhir_adapter_directory_cache",
    "Directory look-ups answered from the cache (hit) or sent on (miss)",
    ["result"],
)
RATE_LIMIT_REFUSED = Counter(
    "fhir_adapter_rate_limit_refused", "Requests refused with 429 by the rate limit"
)
RATE_LIMIT_STORE_ERRORS = Counter(
    "fhir_adapter_rate_limit_store_errors",
    "Rate-limit checks the shared store (Redis) could not answer; counted in this process instead",
)

_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}
_requests: dict[tuple[str, str, str], Counter] = {}
_latency: dict[tuple[str, str], Histogram] = {}


def status_class(status: int) -> str:
    return _STATUS_CLASS.get(status // 100, "other")


# Any token is a valid HTTP method: one a caller makes up must not become a new time series.
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request. The label children are kept here: `labels()` checks its arguments
    on every call, and this runs on every request."""
    if method not in _METHODS:
        method = "other"
    key = (method, route, status_class(status))
    counter = _requests.get(key)
    if counter is None:
        counter = _requests[key] = HTTP_REQUESTS.labels(*key)
    counter.inc()
    timing = _latency.get(key[:2])
    if timing is None:
        timing = _latency[key[:2]] = HTTP_LATENCY.labels(method, route)
    timing.observe(seconds)


def decision_recorded(outcome: str) -> None:
    """A decision moved a request (called once, where services/second_opinion/recorder.py records decisions)."""
    DECISIONS.labels(outcome).inc()


def delivery_attempted(destination: str, result: str) -> None:
    DELIVERIES.labels(destination, result).inc()


def directory_called(result: str) -> None:
    DIRECTORY_REQUESTS.labels(result).inc()


def directory_cache(hit: bool) -> None:
    DIRECTORY_CACHE.labels("hit" if hit else "miss").inc()
