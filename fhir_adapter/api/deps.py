"""FastAPI dependencies: the container built by the composition root, and negotiation checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fhir_adapter.bootstrap import Container


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
