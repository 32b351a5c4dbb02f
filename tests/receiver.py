"""A receiving FHIR endpoint for delivery tests: stores what it gets, deduplicating conditional
creates by identifier as a real FHIR server does, and fails on purpose when told to."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


class Receiver:
    def __init__(self, *, fail_rate: float = 0.0, seed: int = 7) -> None:
        self.fail_rate = fail_rate
        self.garbage = False
        self.refusing = False  # answer 503 to everything, storing nothing
        self.delay = 0.0  # seconds per request: a slow receiver
        self.random = random.Random(seed)
        self.stored: dict[
            tuple[str, str], dict[str, Any]
        ] = {}  # (type, "system|value") -> resource
        self.posts = 0
        self.app = FastAPI()
        self.app.post("/ehr/{organization}/fhir")(self.transaction)
        self.app.post("/notices")(self.transaction)
        self.app.post("/hooks/{name}")(self.hook)
        self.notifications: list[dict[str, Any]] = []
        self.mails_on: str | None = None  # as a mailing service: the mailing date it answers
        self.hook_headers: list[dict[str, str]] = []

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        # a copy: the receiver's server thread may be storing while the test reads
        return [r for (kind, _), r in list(self.stored.items()) if kind == resource_type]

    def reports_received(self) -> list[dict[str, Any]]:
        """The Communications that carry a Consultation Report (not the decision notices)."""
        return [
            r
            for r in self.of_type("Communication")
            if any("/sid/communication" in i.get("system", "") for i in r.get("identifier", []))
        ]

    async def transaction(self, request: Request) -> Response:
        self.posts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refusing:
            return JSONResponse({"error": "down"}, status_code=503)
        if self.garbage:
            return Response("<html>maintenance</html>", media_type="text/html")
        roll = self.random.random()
        if roll < self.fail_rate / 2:
            return JSONResponse({"error": "busy"}, status_code=503)  # refused before storing
        bundle = await request.json()
        entries = []
        for entry in bundle["entry"]:
            resource, condition = entry["resource"], entry["request"].get("ifNoneExist", "")
            key = (resource["resourceType"], condition.removeprefix("identifier="))
            status = "200 OK" if key in self.stored else "201 Created"
            self.stored.setdefault(key, resource)
            entries.append({"response": {"status": status}})
        if roll < self.fail_rate:
            return JSONResponse(
                {"error": "lost"}, status_code=500
            )  # stored, but the answer is lost
        answer: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": entries,
        }
        if self.mails_on and request.url.path == "/notices":
            answer["extension"] = [
                {
                    "url": "https://fhir-adapter.org/fhir/StructureDefinition/notice-mailed-on",
                    "valueDate": self.mails_on,
                }
            ]
        return JSONResponse(answer)

    async def hook(self, name: str, request: Request) -> Response:
        """A rest-hook subscriber: keeps every notification Bundle it accepts."""
        self.posts += 1
        if self.refusing:
            return JSONResponse({"error": "down"}, status_code=503)
        self.notifications.append(await request.json())
        self.hook_headers.append(dict(request.headers))
        return Response(status_code=200)
