"""Write hooks: what a workflow adds to plain FHIR writes, one concern each (resubmission
conditions, the second-opinion intake, consultation reports, Subscription checks), composed in
the order the composition root lists them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhir_adapter.errors import UnprocessableEntityError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.ports.hooks import WriteHooks, WriteResult
from fhir_adapter.ports.store import StoreTransaction


class NoHooks:
    """Plain FHIR: no conditions, checks or follow-up work (a hook overrides what it adds)."""

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        return None


class HookChain:
    """Several hooks as one: the first implicit condition any of them gives; every hook's checks
    run, and their issues are answered together (one 422 with every issue)."""

    def __init__(self, hooks: Sequence[WriteHooks] = ()) -> None:
        self.hooks = list(hooks)

    def implicit_condition(self, content: dict[str, Any]) -> str | None:
        for hook in self.hooks:
            condition = hook.implicit_condition(content)
            if condition:
                return condition
        return None

    async def after_writes(
        self, tx: StoreTransaction, results: list[WriteResult]
    ) -> list[WriteResult]:
        issues: list[Issue] = []
        for hook in self.hooks:
            try:
                results = await hook.after_writes(tx, results)
            except UnprocessableEntityError as error:
                issues += error.issues
        if issues:
            raise UnprocessableEntityError(issues=issues)
        return results

    async def after_commit(self, results: list[WriteResult]) -> None:
        for hook in self.hooks:
            await hook.after_commit(results)
