# fhir-adapter: the FHIR R4 service on its embedded defaults (SQLite in /data), as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_adapter ./fhir_adapter
COPY examples ./examples
COPY profiles ./profiles
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/fhir fhir \
    && mkdir /data && chown fhir /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER fhir
WORKDIR /data
ENV FHIR_ADAPTER_HOST=0.0.0.0 \
    FHIR_ADAPTER_PORT=8080 \
    FHIR_ADAPTER_DATABASE_URL=sqlite+aiosqlite:////data/fhir-adapter.db \
    PYTHONUNBUFFERED=1
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"FHIR_ADAPTER_PORT\"]}/fhir/metadata', timeout=4)"
CMD ["fhir-adapter", "serve"]
