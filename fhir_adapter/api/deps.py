"""FastAPI dependencies: the container built by the composition root, and negotiation checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_adapter.bootstrap import Container


async def get_container(request: Request) -> Container:
    """Async on purpose, as every dependency on the read path: FastAPI runs a plain `def`
    dependency in a worker thread, a thread hop per request (issue #18)."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
