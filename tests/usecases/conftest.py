"""Fast tests of the second-opinion use cases, below the HTTP API: the services on one store.

Every test reaches the store through the single fixture `usecase_store`: the in-memory fake of
the store (tests/memory_store.py), so that these tests need no database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from fhir_adapter.bootstrap import demo_directory_file
from fhir_adapter.codes import STATUS_SYSTEM
from fhir_adapter.directory.client import DirectoryClient
from fhir_adapter.policy.decision import Decision
from fhir_adapter.ports.store import ResourceStore, StoredResource, StoreTransaction
from fhir_adapter.services.bundles import BundleService
from fhir_adapter.services.resources import ResourceService
from fhir_adapter.services.second_opinion.context import WorkflowConfig
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder
from fhir_adapter.services.second_opinion.service import SecondOpinionWorkflow
from fhir_adapter.workflow.deadlines import california_holidays
from tests.conftest import BASE_URL
from tests.factories import example_request
from tests.fakes import FrozenClock
from tests.memory_store import MemoryStore

PLAN = "Organization/demo-plan"


@pytest.fixture
async def usecase_store() -> ResourceStore:
    """The store the use cases run on (the one place to swap it): the in-memory fake."""
    return MemoryStore(base_url=BASE_URL)


class RecordingRecorder(DecisionRecorder):
    """The real recorder, keeping a list of what it was asked to record (task id, outcome)."""

    def __init__(self, recorder: DecisionRecorder) -> None:
        super().__init__(recorder.context)
        self.recorded: list[tuple[str, str]] = []

    async def record(
        self, tx: StoreTransaction, task: StoredResource, *rest: Any, **named: Any
    ) -> StoredResource:
        decision: Decision = rest[1]
        self.recorded.append((task.id, decision.outcome.value))
        return await super().record(tx, task, *rest, **named)


@cache
def _plan_organization() -> dict[str, Any]:
    for entry in json.loads(demo_directory_file().read_text())["entry"]:
        resource = entry["resource"]
        if f"{resource['resourceType']}/{resource['id']}" == PLAN:
            return dict(resource)
    raise LookupError(PLAN)


@dataclass
class UseCases:
    """The workflow's services over `usecase_store`, and a few ways to drive them."""

    store: ResourceStore
    resources: ResourceService
    bundles: BundleService
    workflow: SecondOpinionWorkflow
    recorder: RecordingRecorder
    clock: FrozenClock

    async def submit(self, name: str, suffix: str = "") -> dict[str, str]:
        """Submit an example request Bundle; the keys (`Type/id`) it stored, by type."""
        answer = await self.bundles.process(example_request(name, suffix or f"-{name}"))
        locations = [e["response"]["location"].split("/_history")[0] for e in answer["entry"]]
        return {key.split("/")[0]: key for key in locations}

    async def read(self, key: str) -> dict[str, Any]:
        return (await self.resources.read(*key.split("/", 1))).content

    async def decision(self, task_key: str) -> dict[str, Any] | None:
        outputs = (await self.read(task_key)).get("output") or []
        return await self.read(outputs[0]["valueReference"]["reference"]) if outputs else None


def business_status(task: dict[str, Any]) -> str | None:
    codings = (task.get("businessStatus") or {}).get("coding") or []
    return next((c["code"] for c in codings if c["system"] == STATUS_SYSTEM), None)


@pytest.fixture
async def usecases(
    usecase_store: ResourceStore, directory: DirectoryClient, clock: FrozenClock
) -> UseCases:
    resources = ResourceService(usecase_store, base_url=BASE_URL, clock=clock)
    holidays = california_holidays()
    workflow = SecondOpinionWorkflow(
        usecase_store,
        resources,
        directory,
        config=WorkflowConfig(plan_organization=PLAN),
        closed_days=lambda: holidays,
        clock=clock,
    )
    recorder = RecordingRecorder(workflow.recorder)
    for use_case in (workflow.evaluation, workflow.reviewer, workflow.cancellation, workflow.jobs):
        use_case.recorder = recorder
    resources.set_hooks(workflow.write_hooks())
    async with usecase_store.transaction() as tx:
        plan = _plan_organization()
        await resources.create_in(tx, plan, path="Organization", pending=frozenset(), id=plan["id"])
    bundles = BundleService(resources, max_entries=100)
    return UseCases(usecase_store, resources, bundles, workflow, recorder, clock)
