"""The one way a use case takes hold of a second-opinion request's Task before changing it."""

from __future__ import annotations

from collections.abc import Container

from fhir_adapter.errors import InvalidTransitionError, NotFoundError
from fhir_adapter.ports.store import StoredResource, StoreTransaction
from fhir_adapter.workflow.intake import is_fulfillment_task
from fhir_adapter.workflow.states import UNDECIDED


async def lock_request_task(
    tx: StoreTransaction,
    task_id: str,
    *,
    refusal: str,
    allowed: Container[str] = UNDECIDED,
) -> StoredResource:
    """The Task of a second-opinion request, held for update until `tx` ends: 404 for any other
    Task or none, 409 (with `Task/{id} is {status}` and `refusal`) when its status is not
    `allowed` (by default: undecided)."""
    task = await tx.resources.read_for_update("Task", task_id)
    if task is None or not is_fulfillment_task(task.content):
        raise NotFoundError(f"Task/{task_id} is not a second-opinion request")
    status = task.content.get("status")
    if status not in allowed:
        raise InvalidTransitionError(
            f"Task/{task_id} is {status}{refusal}", expression="Task.status"
        )
    return task
