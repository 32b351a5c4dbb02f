"""HttpDeliverer: POST a transaction Bundle to a FHIR base and say whether it was stored."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from fhir_adapter.delivery.guarded import failure_category
from fhir_adapter.ports.delivery import DeliveryAttempt, NotificationAttempt
from fhir_adapter.workflow.letters import NOTICE_MAILED_ON_URL

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class HttpDeliverer:
    """Implements services.delivery.Deliverer with one long-lived httpx.AsyncClient."""

    def __init__(
        self, http: httpx.AsyncClient, *, notify_http: httpx.AsyncClient | None = None
    ) -> None:
        self.http = http
        self.notify_http = notify_http or http  # rest-hooks: public_only_client in production

    async def post_transaction(self, base_url: str, bundle: dict[str, Any]) -> DeliveryAttempt:
        try:
            response = await self.http.post(
                base_url.rstrip("/"),
                content=orjson.dumps(bundle),
                headers={
                    "Content-Type": "application/fhir+json",
                    "Accept": "application/fhir+json",
                },
            )
        except httpx.HTTPError as exc:
            return DeliveryAttempt(False, type(exc).__name__)
        if response.status_code != 200:
            return DeliveryAttempt(False, f"HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return DeliveryAttempt(False, "answer is not JSON")
        entries = answer.get("entry") if isinstance(answer, dict) else None
        if (
            not isinstance(answer, dict)
            or answer.get("type") != "transaction-response"
            or not isinstance(entries, list)
            or len(entries) != len(bundle["entry"])
        ):
            return DeliveryAttempt(False, "answer is not a transaction-response")
        statuses = [
            str((e.get("response") or {}).get("status", "")) for e in entries if isinstance(e, dict)
        ]
        if len(statuses) != len(entries) or not all(s.startswith("2") for s in statuses):
            return DeliveryAttempt(False, "an entry was not stored")
        return DeliveryAttempt(True, None, mailed_on=_mailed_on(answer, entries))

    async def post_notification(
        self, url: str, bundle: dict[str, Any], headers: dict[str, str]
    ) -> NotificationAttempt:
        """A rest-hook notification: any 2xx means the subscriber has it."""
        try:
            response = await self.notify_http.post(
                url,
                content=orjson.dumps(bundle),
                headers={**headers, "Content-Type": "application/fhir+json"},
            )
        except httpx.HTTPError as exc:
            return NotificationAttempt(False, failure_category(exc))
        if 200 <= response.status_code < 300:
            return NotificationAttempt(True, None)
        return NotificationAttempt(False, "delivery failed: the endpoint refused it")


def _mailed_on(answer: dict[str, Any], entries: list[Any]) -> str | None:
    """A member-notice mailing service may say when it mails the letter: the notice-mailed-on
    extension (profiles/) on its transaction-response or on an entry's response."""
    holders = [answer, *((e.get("response") or {}) for e in entries if isinstance(e, dict))]
    for holder in holders:
        for extension in holder.get("extension") or [] if isinstance(holder, dict) else []:
            if not isinstance(extension, dict) or extension.get("url") != NOTICE_MAILED_ON_URL:
                continue
            value = extension.get("valueDate")
            if isinstance(value, str) and _DATE.fullmatch(value):
                return value
    return None
