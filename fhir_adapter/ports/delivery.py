"""The delivery ports: sending transaction Bundles and Subscription notifications to other
systems (implemented by delivery.http.HttpDeliverer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    delivered: bool
    error: str | None  # a short code ("HTTP 503", "ConnectTimeout"); never content
    mailed_on: str | None = None  # the mailing date a member-notice mailing service returned


class Deliverer(Protocol):
    async def post_transaction(self, base_url: str, bundle: dict[str, Any]) -> DeliveryAttempt: ...


@dataclass(frozen=True, slots=True)
class NotificationAttempt:
    delivered: bool
    error: str | None


class Notifier(Protocol):
    async def post_notification(
        self, url: str, bundle: dict[str, Any], headers: dict[str, str]
    ) -> NotificationAttempt: ...
