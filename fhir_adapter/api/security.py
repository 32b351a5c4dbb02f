"""Authentication for `/fhir`: every route but the public ones needs a valid bearer token.

`authenticate` is a router-level dependency (app.py), so a route added later is protected by
default; routes that need to know who calls ask for `GuardDep`, the caller's scopes applied.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_adapter.access.guard import AccessGuard, Guard
from fhir_adapter.access.scopes import Access
from fhir_adapter.api.deps import ContainerDep
from fhir_adapter.errors import AuthenticationError


async def authenticate(request: Request, container: ContainerDep) -> Access:
    header = request.headers.get("authorization")
    address = request.client.host if request.client else "unknown"
    if not header:
        await container.rate_limiter.check(f"address:{address}")
        raise AuthenticationError(
            "This endpoint needs an OAuth 2.0 bearer access token (SMART Backend Services; "
            "see /fhir/.well-known/smart-configuration)",
            error=None,
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        await container.rate_limiter.check(f"address:{address}")
        raise AuthenticationError(
            "The Authorization header must read 'Bearer <access token>'", error="invalid_request"
        )
    try:
        access = await container.tokens.verify(token.strip())
    except AuthenticationError:
        await container.rate_limiter.check(f"address:{address}")
        raise
    request.state.access = access
    await container.rate_limiter.check(f"client:{access.client_id}")
    return access


AccessDep = Annotated[Access, Depends(authenticate)]


async def get_guard(access: AccessDep, container: ContainerDep) -> Guard:
    return AccessGuard(access, base_url=container.settings.fhir_base_url)


GuardDep = Annotated[Guard, Depends(get_guard)]
