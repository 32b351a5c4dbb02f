"""SMART discovery (`/fhir/.well-known/smart-configuration`) and the built-in authorization
server's token endpoint and public keys (`/auth/token`, `/auth/jwks`)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhir_adapter.access.audit import AuditRecord
from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.errors import AdapterError
from fhir_adapter.security.issuer import ASSERTION_ALGORITHMS, OAuthError

discovery = APIRouter(tags=["security"])
authorization = APIRouter(tags=["security"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, _NO_STORE, media_type="application/json")


@discovery.get("/.well-known/smart-configuration", summary="SMART configuration (public)")
async def smart_configuration(container: ContainerDep) -> Response:
    settings = container.settings
    issuer = container.issuer
    configuration: dict[str, object] = {
        "issuer": issuer.urls.issuer if issuer else settings.auth_issuer,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": [
            "system/*.rs",
            "system/*.cruds",
            "system/AuditEvent.rs",
            "patient/*.rs",
            "system/*.read",
            "system/*.write",
            "patient/*.read",
        ],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }
    if issuer is not None:
        configuration["token_endpoint"] = issuer.urls.token_endpoint
        configuration["jwks_uri"] = issuer.urls.jwks_uri
    else:
        if settings.auth_token_endpoint:
            configuration["token_endpoint"] = settings.auth_token_endpoint
        if settings.auth_jwks_url:
            configuration["jwks_uri"] = settings.auth_jwks_url
    return _json(configuration)


@authorization.post("/token", summary="SMART Backend Services token endpoint")
async def token(request: Request, container: ContainerDep) -> Response:
    issuer = container.issuer
    if issuer is None:
        return _json(
            {
                "error": "invalid_request",
                "error_description": "tokens come from the configured issuer",
            },
            404,
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return _json(
            {
                "error": "invalid_request",
                "error_description": "the token request must be application/x-www-form-urlencoded",
            },
            400,
        )
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    address = request.client.host if request.client else "unknown"
    try:
        await container.rate_limiter.check(f"token:{address}")
        answer = await issuer.exchange(form)
    except OAuthError as exc:
        _audit_refusal(container, exc.status_code, address)
        return _json(exc.body(), exc.status_code)
    except AdapterError as exc:  # 429
        _audit_refusal(container, exc.status_code, address)
        raise
    return _json(answer)


def _audit_refusal(container: ContainerDep, status: int, address: str) -> None:
    """Issue #16: refused token requests are on the audit trail (who tried, from where)."""
    container.audit.record(
        AuditRecord(
            interaction="operation",
            status=status,
            recorded=container.workflow.clock(),
            client_id=None,
            address=address,
            operation="token",
        )
    )


@authorization.get("/jwks", summary="The built-in issuer's public keys")
async def jwks(container: ContainerDep) -> Response:
    if container.issuer is None:
        return _json({"keys": []}, 404)
    return Response(
        orjson.dumps(container.issuer.jwks()),
        headers={"Cache-Control": "public, max-age=300"},
        media_type="application/json",
    )
