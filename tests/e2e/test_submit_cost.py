"""What one submission costs the store: the statement budget of the benchmarked path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import example_request

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"

# The benchmark's submission (9 entries, all conditional creates; stored, decided, two notices).
# Issue #13 brought it from 45 statements on SQLite / 51 on PostgreSQL to 26 / 11 (SQLite counts
# its two BEGIN IMMEDIATE: one transaction stores, one decides)
# (docs/performance.md lists each one and where it comes from):
# - one search (UNION ALL) for all of a Bundle's conditional creates, which also finds the stored
#   resources the entries reference (their reference checks ask nothing more); for the criteria
#   that matched nothing, one advisory-lock statement, in sorted order, and one search more (it
#   sees what the lock's last holder committed). A match needs no lock: the professionals every
#   submission names take none, so submissions do not queue behind each other for them;
# - resources queued until a statement needs them; a resource replaced before its INSERT runs (the
#   Task received in the transaction that created it) goes in at its new version, its history
#   rows kept; reads, existence checks and UPDATEs of other rows do not write the queue first;
# - on PostgreSQL a flush is one statement: new resources (INSERT ... RETURNING in a WITH), their
#   versions and index rows, and the DELETE of outdated index rows. SQLite has no data-modifying
#   WITH: one INSERT per table and one DELETE per index table for a replaced resource. On
#   PostgreSQL the received Task's workflow job and the decision's outbox items (its notices'
#   render jobs) go in with that statement too;
# - the request's records gathered in the submitting transaction, from what it wrote and what its
#   look-up returned; the recorder's ClaimResponse and Claim look-ups in one search.
STATEMENT_BUDGET = {"sqlite": 26, "postgresql": 11}
# A member's own request for a provider they chose, sent without conditions: the same steps, and
# one statement more than the §3 submission. Its notices go to the member only, so before the
# render jobs (issue #13: notices rendered by the worker) its decision queued nothing; now it
# queues their render jobs in one INSERT on SQLite (the §3 submission's render jobs take the
# INSERT its requester's delivery used before; on PostgreSQL both go in with the flush).
MEMBER_CHOICE_BUDGET = {"sqlite": 27, "postgresql": 12}


def without_conditions(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        entry["request"].pop("ifNoneExist", None)
    return bundle


async def count_statements(engine: AsyncEngine, client: httpx.AsyncClient, bundle: Any) -> int:
    return len(await sent_statements(engine, client, bundle))


async def sent_statements(
    engine: AsyncEngine, client: httpx.AsyncClient, bundle: Any
) -> list[tuple[str, Any]]:
    """The statements (and their parameters) a submission sends, in order."""
    statements: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        statements.append((args[2], args[3]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        response = await client.post("", json=bundle)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.text
    return statements


async def test_a_submission_stays_within_its_statement_budget(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    bundle = json.loads((EXAMPLES / "in-network-specialist-care.json").read_text())

    used = await count_statements(engine, client, bundle)

    assert used <= STATEMENT_BUDGET[engine.dialect.name]
    tasks = (await client.get("/Task", params={"_summary": "count"})).json()
    notices = (await client.get("/Communication", params={"_summary": "count"})).json()
    assert tasks["total"] == 1
    assert notices["total"] == 2


async def test_a_task_for_a_new_request_needs_no_duplicate_search(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    """The workflow's implicit condition for a Task names the request it focuses; when that
    request is new in the same transaction nothing stored can match, so there is no search. A
    resubmission of the same request still finds the Task it has (the Task is not duplicated)."""
    bundle = without_conditions(
        json.loads((EXAMPLES / "member-selected-provider.json").read_text())
    )
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Task":
            entry["resource"].pop("identifier")

    first = await count_statements(engine, client, bundle)
    await client.post("", json=bundle)

    tasks = (await client.get("/Task", params={"_summary": "count"})).json()
    assert tasks["total"] == 1
    assert first <= MEMBER_CHOICE_BUDGET[engine.dialect.name]


async def test_the_task_received_with_its_request_keeps_each_version_and_only_its_index(
    client: httpx.AsyncClient,
) -> None:
    """The Task is written once (already received), yet its history holds the version the EHR
    sent, the received one and the decided one, and the search index only the current one."""
    bundle = json.loads((EXAMPLES / "in-network-specialist-care.json").read_text())
    answer = (await client.post("", json=bundle)).json()
    location = next(
        e["response"]["location"]
        for e in answer["entry"]
        if e["response"]["location"].startswith("Task/")
    )
    task_key = location.split("/_history")[0]

    history = (await client.get(f"{task_key}/_history")).json()

    statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
    assert statuses == [bundle_task(bundle)["status"], "received", "accepted"]
    assert [e["resource"]["meta"]["versionId"] for e in reversed(history["entry"])] == [
        "1",
        "2",
        "3",
    ]
    for status, found in (("requested", 0), ("received", 0), ("accepted", 1)):
        page = (await client.get("/Task", params={"status": status, "_summary": "count"})).json()
        assert page["total"] == found, status


def bundle_task(bundle: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"
    )
    return task


def conditional(resource: dict[str, Any], criteria: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], "ifNoneExist": criteria},
    }


async def test_conditional_creates_searched_together_answer_each_entry_alone(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """One search serves all of a Bundle's conditions, yet each entry gets its own answer: the
    one match is used, no match creates, several matches fail the Bundle (412) naming the
    entry, and nothing of it is stored."""
    for value in ("ONE", "TWO", "TWO"):
        patient = {"resourceType": "Patient", "identifier": [{"system": "urn:m", "value": value}]}
        assert (await client.post("/Patient", json=patient)).status_code == 201
    entries = [
        conditional({"resourceType": "Patient"}, "identifier=urn:m|ONE"),
        conditional({"resourceType": "Organization", "name": "New"}, "name=New"),
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    answer = await client.post("", json=bundle)
    assert answer.status_code == 200, answer.text
    assert [e["response"]["status"] for e in answer.json()["entry"]] == ["200 OK", "201 Created"]

    entries.append(conditional({"resourceType": "Patient"}, "identifier=urn:m|TWO"))
    entries[1] = conditional({"resourceType": "Organization", "name": "Other"}, "name=Other")
    refused = await client.post("", json=bundle)

    assert refused.status_code == 412
    assert refused.json()["issue"][0]["expression"] == ["Bundle.entry[2]"]
    others = await client.get("/Organization", params={"name": "Other", "_summary": "count"})
    assert others.json()["total"] == 0


async def test_the_same_submission_sent_at_once_is_stored_once(client: httpx.AsyncClient) -> None:
    """The conditions that matched nothing are locked by one statement, in sorted order, and
    searched again after it: the same request sent several times at once is stored once and
    none of them deadlocks."""
    bundle = json.loads((EXAMPLES / "in-network-specialist-care.json").read_text())

    answers = await asyncio.gather(*(client.post("", json=bundle) for _ in range(4)))

    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    tasks = (await client.get("/Task", params={"_summary": "count"})).json()
    assert tasks["total"] == 1


async def test_only_conditions_that_match_nothing_take_a_lock(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    """Issue #13: the practitioners and roles every submission of an EHR names are found without
    a lock; only the member's new resources are locked (and searched again after the lock). A
    submission whose conditions all match takes no lock at all."""
    bundle = json.loads((EXAMPLES / "in-network-specialist-care.json").read_text())
    await client.post("", json=bundle)

    another = await sent_statements(  # another member (the benchmark's renumbering)
        engine, client, example_request("in-network-specialist-care", "-2")
    )
    again = await sent_statements(engine, client, bundle)

    locks = [p for s, p in another if "pg_advisory_xact_lock" in s]
    if engine.dialect.name == "postgresql":
        assert [len(p[0]) for p in locks] == [5]  # Patient, Coverage, Condition, request, Task
    assert not [s for s, _ in again if "pg_advisory_xact_lock" in s]
    tasks = (await client.get("/Task", params={"_summary": "count"})).json()
    practitioners = (await client.get("/Practitioner", params={"_summary": "count"})).json()
    assert (tasks["total"], practitioners["total"]) == (2, 2)
