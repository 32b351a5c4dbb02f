"""What the background worker does right after an answer, run on demand by tests that read a
decision's notices: render every notice owed (issue #13: rendering is off the answer path)."""

from __future__ import annotations

from fhir_adapter.bootstrap import Container


async def render_notices(container: Container) -> int:
    """Run the render jobs until none is due; returns how many notices were rendered."""
    rendered = 0
    while tried := await container.delivery.rendering.run_due(limit=100):
        rendered += tried
    return rendered
