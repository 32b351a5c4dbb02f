"""The second-opinion workflow assembled from its use cases, for the composition root: the write
hooks it adds to the resource service, and the entry points the API, the review workspace, the
PAS services, the CLI and the background worker call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from fhir_adapter.policy.decision import Decision
from fhir_adapter.policy.facts import Provider
from fhir_adapter.ports.directory import Directory
from fhir_adapter.ports.hooks import WriteHooks
from fhir_adapter.ports.store import ResourceStore, StoredResource
from fhir_adapter.services.resources import Clock, ResourceService
from fhir_adapter.services.second_opinion.cancellation import Cancellation
from fhir_adapter.services.second_opinion.context import WorkflowConfig, WorkflowContext
from fhir_adapter.services.second_opinion.evaluation import Evaluation
from fhir_adapter.services.second_opinion.gathering import FactGathering
from fhir_adapter.services.second_opinion.intake import RequestIntake, ResubmissionConditions
from fhir_adapter.services.second_opinion.jobs import WorkflowJobs
from fhir_adapter.services.second_opinion.recorder import DecisionRecorder
from fhir_adapter.services.second_opinion.reports import ReportCompletion
from fhir_adapter.services.second_opinion.reviewer import ReviewerDecisions
from fhir_adapter.services.second_opinion.subscription_checks import SubscriptionChecks
from fhir_adapter.services.subscriptions import SubscriptionService
from fhir_adapter.workflow.review import ReviewerDecision


class SecondOpinionWorkflow:
    """One object per use case, sharing one context and one decision recorder."""

    def __init__(
        self,
        store: ResourceStore,
        resources: ResourceService,
        directory: Directory,
        *,
        config: WorkflowConfig,
        closed_days: Callable[[], set[date]],
        clock: Clock,
        subscriptions: SubscriptionService | None = None,
    ) -> None:
        self.context = WorkflowContext(
            store, resources, directory, config, closed_days, clock, subscriptions
        )
        self.recorder = DecisionRecorder(self.context)
        self.gathering = FactGathering(self.context)
        self.evaluation = Evaluation(self.context, self.gathering, self.recorder)
        self.intake = RequestIntake(self.context, self.evaluation)
        self.reports = ReportCompletion(self.context)
        self.reviewer = ReviewerDecisions(self.context, self.recorder, self.evaluation)
        self.cancellation = Cancellation(self.context, self.recorder)
        self.jobs = WorkflowJobs(self.context, self.evaluation, self.recorder)

    @property
    def config(self) -> WorkflowConfig:
        return self.context.config

    @config.setter
    def config(self, config: WorkflowConfig) -> None:
        self.context.config = config

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @property
    def directory(self) -> Directory:
        return self.context.directory

    def write_hooks(self) -> list[WriteHooks]:
        """The hooks of the resource service, one concern each, in the order they check."""
        return [
            ResubmissionConditions(),
            self.intake,
            self.reports,
            SubscriptionChecks(self.context),
        ]

    # -- entry points, by use case --------------------------------------------------------------

    async def evaluate(self, task_id: str) -> Decision | None:
        return await self.evaluation.evaluate(task_id)

    async def candidates(self, task_id: str) -> tuple[tuple[Provider, ...], tuple[Provider, ...]]:
        return await self.evaluation.candidates(task_id)

    async def decide_by_reviewer(self, task_id: str, review: ReviewerDecision) -> StoredResource:
        return await self.reviewer.decide_by_reviewer(task_id, review)

    async def amend(self, task_id: str, *, note: str) -> StoredResource:
        return await self.reviewer.amend(task_id, note=note)

    async def cancel(self, task_id: str, *, reason: str) -> StoredResource:
        return await self.cancellation.cancel(task_id, reason=reason)

    async def pend_unanswered(self, task_id: str) -> None:
        await self.jobs.pend_unanswered(task_id)

    async def run_due_jobs(self, *, limit: int = 20) -> int:
        return await self.jobs.run_due_jobs(limit=limit)

    async def flag_nearing_deadline(self, *, limit: int = 200) -> int:
        return await self.jobs.flag_nearing_deadline(limit=limit)

    async def nearing_deadline_count(self, *, limit: int = 10_000) -> int:
        return await self.jobs.nearing_deadline_count(limit=limit)

    async def expire_overdue(self, *, limit: int = 50) -> int:
        return await self.jobs.expire_overdue(limit=limit)
