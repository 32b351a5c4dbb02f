"""Subscriptions, as a write hook (issue #16): a Subscription written is checked (its channel and
allowed hosts; a new one is `requested`), and a new one gets its handshake once committed."""

from __future__ import annotations

import logging

from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.ports.hooks import WriteResult
from fhir_adapter.ports.store import StoreTransaction
from fhir_adapter.services.second_opinion.context import WorkflowHook
from fhir_adapter.workflow.subscriptions import check_subscription

log = logging.getLogger(__name__)


class SubscriptionChecks(WorkflowHook):
    """Checks Subscriptions as they are written; shakes hands with new ones after the commit."""

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        issues: list[Issue] = []
        for result in results:
            if result.resource.resource_type != "Subscription":
                continue
            subscription = result.resource.content
            allowed = self.context.config.subscription_allowed_hosts
            issues += check_subscription(subscription, result.path, allowed)
            if result.created and subscription.get("status") != "requested":
                where = f"{result.path}.status"
                text = f"{where}: a new Subscription is 'requested'; the handshake makes it active"
                issues.append(Issue("value", text, where))
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        subscriptions = self.context.subscriptions
        if subscriptions is None:
            return
        for result in results:
            if result.created and result.resource.content.get("resourceType") == "Subscription":
                try:
                    await subscriptions.handshake(result.resource.id)
                except Exception as exc:  # it stays 'requested'; the client can see and retry
                    log.warning(
                        "handshake of Subscription/%s failed (%s)",
                        result.resource.id,
                        type(exc).__name__,
                    )
