"""A receiving FHIR endpoint for delivery tests: stores what it gets and fails on purpose when
told to.

It treats a transaction Bundle as a FHIR server does (docs/durability.md): atomically, each entry
a create with a server-assigned id, and an entry with `request.ifNoneExist` a conditional create:
when a stored resource of that type already matches the `identifier=system|value` search, nothing
is created and the entry answers 200 OK. A create without the condition is always a new resource,
so a sender that repeats itself without conditional creates leaves duplicates here."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
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
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}  # (type, server id) -> resource
        self.creates = 0  # resources created (conditional creates that matched are not)
        # conditional creates that found their resource stored already, by resource type
        self.matched: Counter[str] = Counter()
        self._by_identifier: dict[tuple[str, Any, Any], list[tuple[str, str]]] = {}
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

    def matching(self, resource_type: str, condition: str) -> list[dict[str, Any]]:
        """The stored resources an `identifier=system|value` search finds (the only search
        parameter conditional creates use here)."""
        name, _, token = condition.partition("=")
        if name != "identifier" or "|" not in token:
            raise ValueError(f"unsupported ifNoneExist {condition!r}")
        system, _, value = token.partition("|")
        return [
            self.stored[key] for key in self._by_identifier.get((resource_type, system, value), [])
        ]

    def _create(self, resource: dict[str, Any], condition: str | None) -> str:
        """One transaction entry: '201 Created', or '200 OK' for a condition that matched."""
        kind = resource["resourceType"]
        if condition and self.matching(kind, condition):
            self.matched[kind] += 1
            return "200 OK"
        server_id = str(uuid.uuid4())
        self.stored[(kind, server_id)] = {**resource, "id": server_id}
        for i in resource.get("identifier") or []:  # the search index
            self._by_identifier.setdefault((kind, i.get("system"), i.get("value")), []).append(
                (kind, server_id)
            )
        self.creates += 1
        return "201 Created"

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
        # No await from here to the answer: the transaction is atomic, as on a FHIR server.
        entries = [
            {"response": {"status": self._create(e["resource"], e["request"].get("ifNoneExist"))}}
            for e in bundle["entry"]
        ]
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
