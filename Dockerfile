# fhir-adapter: the FHIR R4 service on its embedded defaults (SQLite in /data), as a non-root user.
#
# The base image is pinned by version tag (a digest could not be looked up where this was written;
# pin one too if your registry policy asks: docker buildx imagetools inspect <tag>). The Python
# dependencies are the exact versions and hashes of requirements.lock (uv pip compile, see README).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# 1. The locked dependencies, in a layer of their own: rebuilt only when requirements.lock changes.
COPY requirements.lock /src/requirements.lock
RUN python -m venv /venv \
    && /venv/bin/pip install --require-hashes -r /src/requirements.lock
# 2. The service itself, without dependencies: all of them are in the layer above.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_adapter ./fhir_adapter
COPY examples ./examples
COPY profiles ./profiles
RUN /venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --create-home --home-dir /home/fhir fhir \
    && mkdir /data && chown fhir /data
COPY --from=build /venv /venv
USER fhir
WORKDIR /data
ENV PATH=/venv/bin:$PATH \
    FHIR_ADAPTER_HOST=0.0.0.0 \
    FHIR_ADAPTER_PORT=8080 \
    FHIR_ADAPTER_DATABASE_URL=sqlite+aiosqlite:////data/fhir-adapter.db \
    PYTHONUNBUFFERED=1
EXPOSE 8080
VOLUME ["/data"]
# Healthy means ready: /readyz answers 200 only when the database answers and the schema is at the
# package's migration head, else a 503 OperationOutcome (docs/observability.md). An orchestrator
# should probe /healthz (liveness: the process is up) and /readyz (readiness) separately. The
# start period covers the first migration.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"FHIR_ADAPTER_PORT\"]}/readyz', timeout=4)"
CMD ["fhir-adapter", "serve"]
