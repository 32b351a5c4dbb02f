"""The store contract (ports.store), run over every store: the in-memory fake (tests/memory_store.py),
SQLite and PostgreSQL. What the services rely on, and so what the fake must keep true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fhir_adapter.errors import ConflictError
from fhir_adapter.fhir.search import SearchQuery, parse_search
from fhir_adapter.ports.store import ClientRecord, OutboxItem, ResourceStore, SigningKey
from tests.conftest import BASE_URL

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def patient(id: str, family: str, birth: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": id,
        "name": [{"family": family}],
        "birthDate": birth,
        "identifier": [{"system": "urn:mrn", "value": f"mrn-{id}"}],
        **extra,
    }


def condition(id: str, patient_id: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
    }


def query(resource_type: str, *params: tuple[str, str]) -> SearchQuery:
    return parse_search(
        resource_type, params, base_url=BASE_URL, default_count=50, max_count=500, strict=True
    )


async def test_instants_come_back_as_the_same_moment_in_utc(store: ResourceStore) -> None:
    """Whatever offset a time was written with, every read (by id, a search page, a version)
    answers the same instant in UTC: meta.lastUpdated and `_lastUpdated` rely on it. On
    PostgreSQL the driver's own decoding is relied on (store/tables.py `UtcDateTime`)."""
    pacific = timezone(timedelta(hours=-8))
    written = datetime(2026, 12, 1, 1, 30, 15, 250000, tzinfo=pacific)
    async with store.transaction() as tx:
        await tx.resources.insert(patient("p1", "Ng", "1970-01-01"), now=written)
    async with store.transaction(write=False) as tx:
        read = await tx.resources.read("Patient", "p1")
        page = await tx.resources.search(query("Patient"))
        version = await tx.resources.vread("Patient", "p1", 1)
    assert read is not None and version is not None
    for found in (read, page.matches[0], version):
        assert found.last_updated == written
        assert found.last_updated.utcoffset() == timedelta(0)
        assert found.last_updated.isoformat() == "2026-12-01T09:30:15.250000+00:00"


async def test_reads_versions_and_history(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        created = await tx.resources.insert(patient("p1", "Ng", "1970-01-01"), now=T0)
        assert (created.key, created.version_id) == ("Patient/p1", 1)
    async with store.transaction() as tx:
        current = await tx.resources.read_for_update("Patient", "p1")
        assert current is not None
        changed = patient("p1", "Ngo", "1970-01-01")
        second = await tx.resources.replace(current, changed, now=T0 + timedelta(minutes=1))
        assert second.version_id == 2
    async with store.transaction(write=False) as tx:
        read = await tx.resources.read("Patient", "p1")
        assert read is not None
        assert (read.version_id, read.last_updated) == (2, T0 + timedelta(minutes=1))
        assert read.content["name"] == [{"family": "Ngo"}]
        first = await tx.resources.vread("Patient", "p1", 1)
        assert first is not None and first.content["name"] == [{"family": "Ng"}]
        assert await tx.resources.vread("Patient", "p1", 3) is None
        assert [v.version_id for v in await tx.resources.history("Patient", "p1")] == [2, 1]
        assert await tx.resources.read("Patient", "nobody") is None
        assert await tx.resources.exists("Patient", "p1")
        assert not await tx.resources.exists("Patient", "nobody")
        keys = [("Patient", "p1"), ("Patient", "nobody")]
        assert await tx.resources.existing(keys) == {("Patient", "p1")}
        assert list(await tx.resources.read_many(keys)) == ["Patient/p1"]


async def test_conflicts_and_rollback(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.resources.insert(patient("p1", "Ng", "1970-01-01"), now=T0)
        stale = await tx.resources.read("Patient", "p1")
    assert stale is not None
    async with store.transaction() as tx:
        await tx.resources.replace(stale, patient("p1", "Ngo", "1970-01-01"), now=T0)
    with pytest.raises(ConflictError, match="changed concurrently"):
        async with store.transaction() as tx:
            await tx.resources.replace(stale, patient("p1", "Nguyen", "1970-01-01"), now=T0)
    with pytest.raises(ConflictError, match="already exists"):
        async with store.transaction() as tx:
            await tx.resources.insert(patient("p1", "Again", "1970-01-01"), now=T0)
    with pytest.raises(RuntimeError, match="boom"):  # nothing of a failed transaction stays
        async with store.transaction() as tx:
            await tx.resources.insert(patient("p2", "Lost", "1970-01-01"), now=T0)
            await tx.jobs.add("t-lost", due_at=T0, first_attempt_at=T0)
            raise RuntimeError("boom")
    async with store.transaction(write=False) as tx:
        kept = await tx.resources.read("Patient", "p1")
        assert kept is not None and (kept.version_id, kept.content["name"][0]["family"]) == (
            2,
            "Ngo",
        )
        assert await tx.resources.read("Patient", "p2") is None
        assert await tx.jobs.get("t-lost") is None


async def test_search(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.resources.insert(patient("p1", "Ng", "1970-01-01"), now=T0)
        await tx.resources.insert(patient("p2", "Nguyen", "1985-06-15", gender="female"), now=T0)
        await tx.resources.insert(patient("p3", "Smith", "1990-03-03"), now=T0)
        await tx.resources.insert(condition("c1", "p1", "111"), now=T0)
        await tx.resources.insert(condition("c2", "p2", "222"), now=T0)
        # written in this transaction and found by its own search
        found = await tx.resources.search(query("Patient", ("family", "ng")))
        assert sorted(m.id for m in found.matches) == ["p1", "p2"]

    async def ids(q: SearchQuery) -> list[str]:
        async with store.transaction(write=False) as tx:
            return [m.id for m in (await tx.resources.search(q)).matches]

    assert await ids(query("Patient", ("family:exact", "ng"))) == ["p1"]
    assert await ids(query("Patient", ("family:contains", "uye"))) == ["p2"]
    assert await ids(query("Patient", ("identifier", "urn:mrn|mrn-p3"))) == ["p3"]
    assert await ids(query("Patient", ("gender:not", "female"))) == ["p1", "p3"]
    assert await ids(query("Patient", ("birthdate", "ge1985-01-01"))) == ["p2", "p3"]
    assert await ids(query("Patient", ("birthdate", "1970"))) == ["p1"]
    assert await ids(query("Patient", ("_id", "p3,p1"))) == ["p1", "p3"]
    assert await ids(query("Condition", ("subject", "Patient/p2"))) == ["c2"]
    assert await ids(query("Condition", ("patient", "p1"), ("code", "111"))) == ["c1"]
    assert await ids(query("Condition", ("code", "http://snomed.info/sct|"))) == ["c1", "c2"]
    in_p1 = query("Condition")
    in_p1 = SearchQuery(**{**_fields(in_p1), "compartment": (("patient", "subject"), "p1")})
    assert await ids(in_p1) == ["c1"]

    async with store.transaction(write=False) as tx:
        first = await tx.resources.search(query("Patient", ("_count", "2")))
        assert [m.id for m in first.matches] == ["p1", "p2"] and first.total == 3
        assert first.next_cursor is not None
        rest = query("Patient", ("_count", "2"))
        rest = SearchQuery(**{**_fields(rest), "cursor": first.next_cursor})
        second = await tx.resources.search(rest)
        assert [m.id for m in second.matches] == ["p3"] and second.next_cursor is None
        counted = await tx.resources.search(query("Patient", ("_summary", "count")))
        assert (counted.matches, counted.total) == ([], 3)
        with_patients = await tx.resources.search(
            query("Condition", ("code", "111"), ("_include", "Condition:subject"))
        )
        assert [m.id for m in with_patients.matches] == ["c1"]
        assert [i.key for i in with_patients.included] == ["Patient/p1"]


def _fields(q: SearchQuery) -> dict[str, Any]:
    return {name: getattr(q, name) for name in SearchQuery.__dataclass_fields__}


async def test_job_leases(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.jobs.add("t1", due_at=T0 + timedelta(days=1), first_attempt_at=T0)
        await tx.jobs.add("t1", due_at=T0 + timedelta(days=9), first_attempt_at=T0)  # keeps its row
        await tx.jobs.add(
            "t2", due_at=T0 + timedelta(hours=1), first_attempt_at=T0 + timedelta(seconds=1)
        )
    now, lease = T0 + timedelta(seconds=5), T0 + timedelta(minutes=2)
    async with store.transaction() as tx:
        claimed = await tx.jobs.claim(now=now, lease_until=lease, limit=10)
        assert [(j.task_id, j.attempts) for j in claimed] == [("t1", 1), ("t2", 1)]
        assert claimed[0].due_at == T0 + timedelta(days=1)
    async with store.transaction() as tx:  # leased: not leased twice before it runs out
        assert await tx.jobs.claim(now=now, lease_until=lease, limit=10) == []
    later = lease + timedelta(seconds=1)
    async with store.transaction() as tx:  # a crashed worker's lease runs out
        again = await tx.jobs.claim(now=later, lease_until=later + timedelta(minutes=2), limit=1)
        assert [(j.task_id, j.attempts) for j in again] == [("t1", 2)]
        await tx.jobs.set("t1", state="review", due_at=T0 + timedelta(days=2))
        await tx.jobs.set("t2", state="done")
    async with store.transaction(write=False) as tx:
        job = await tx.jobs.get("t1")
        assert job is not None and (job.state, job.due_at) == ("review", T0 + timedelta(days=2))
        assert await tx.jobs.get("nope") is None
        soon = await tx.jobs.undecided(due_before=T0 + timedelta(days=3), limit=10)
        assert [j.task_id for j in soon] == ["t1"]
    async with store.transaction() as tx:
        overdue_at = T0 + timedelta(days=2, seconds=1)
        overdue = await tx.jobs.claim(
            now=overdue_at, lease_until=overdue_at, limit=10, overdue=True
        )
        assert [j.task_id for j in overdue] == ["t1"]


def item(id: str, communication: str, *, at: datetime = T0, **extra: Any) -> OutboxItem:
    return OutboxItem(id, communication, "provider-endpoint", "pending", 0, at, at, **extra)


async def test_outbox_leases(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        await tx.outbox.add(item("o1", "c1"))
        await tx.outbox.add(item("o2", "c2", at=T0 + timedelta(seconds=1)))
        await tx.outbox.add(item("o3", "c3", at=T0 + timedelta(seconds=2)))
    now, lease = T0 + timedelta(seconds=5), T0 + timedelta(minutes=2)
    async with store.transaction() as tx:
        claimed = await tx.outbox.claim(now=now, lease_until=lease, limit=2)
        assert [(i.id, i.attempts) for i in claimed] == [("o1", 1), ("o2", 1)]
    async with store.transaction() as tx:
        assert [i.id for i in await tx.outbox.claim(now=now, lease_until=lease, limit=9)] == ["o3"]
        assert await tx.outbox.claim(now=now, lease_until=lease, limit=9) == []
        # o1 is leased: not withdrawn; o3's lease is released first
        await tx.outbox.set("o3", state="pending", next_attempt_at=now, error="HTTP 503")
        assert await tx.outbox.withdraw(["c1", "c3"], now=now) == ["c3"]
        await tx.outbox.set("o1", state="delivered", delivered_at=now)
        await tx.outbox.set("o2", state="failed", error="HTTP 500")
    async with store.transaction() as tx:
        states = {i.id: (i.state, i.last_error) for i in await tx.outbox.items()}
        assert states == {
            "o1": ("delivered", None),
            "o2": ("failed", "HTTP 500"),
            "o3": ("withdrawn", "withdrawn: request cancelled"),
        }
        assert [i.id for i in await tx.outbox.items(state="failed")] == ["o2"]
        delivered = await tx.outbox.items(state="delivered")
        assert delivered[0].delivered_at == now
        assert await tx.outbox.retry(now=now, ids=["o1"]) == 0
        assert await tx.outbox.retry(now=now) == 1
        retried = await tx.outbox.claim(now=now, lease_until=lease, limit=9)
        assert [(i.id, i.attempts) for i in retried] == [("o2", 1)]


async def test_events(store: ResourceStore) -> None:
    async with store.transaction() as tx:
        assert await tx.events.count("s1") == 0
        assert await tx.events.last_sent("s1") is None
        assert await tx.events.add("s1", "Task/t1", now=T0) == 1
        assert await tx.events.add("s1", "Task/t2", now=T0 + timedelta(seconds=1)) == 2
        assert await tx.events.add("s2", "Task/t3", now=T0) == 1
        await tx.outbox.add(item("n1", "", subscription_id="s1", event_number=2))
    async with store.transaction(write=False) as tx:
        assert await tx.events.count("s1") == 2
        assert [e.focus for e in await tx.events.read("s1")] == ["Task/t1", "Task/t2"]
        assert [e.event_number for e in await tx.events.read("s1", since=2)] == [2]
        assert [e.event_number for e in await tx.events.read("s1", since=1, until=1)] == [1]
        assert await tx.events.last_sent("s1") == T0
        sent = (await tx.outbox.items())[0]
        assert (sent.subscription_id, sent.event_number) == ("s1", 2)


async def test_auth(store: ResourceStore) -> None:
    client = ClientRecord("c1", "EHR", {"keys": []}, "system/*.read", None)
    async with store.transaction() as tx:
        assert await tx.auth.signing_key() is None
        await tx.auth.add_signing_key(SigningKey("k1", "ES256", "pem-1"), now=T0)
        await tx.auth.add_signing_key(SigningKey("k2", "ES256", "pem-2"), now=T0 + timedelta(1))
        await tx.auth.add_client(client, now=T0)
        await tx.auth.add_client(
            ClientRecord("c2", "App", {}, "patient/*.read", "p1"), now=T0 + timedelta(1)
        )
    async with store.transaction() as tx:
        key = await tx.auth.signing_key()
        assert key is not None and key.kid == "k2"
        assert await tx.auth.get_client("c1") == client
        assert [c.client_id for c in await tx.auth.list_clients()] == ["c1", "c2"]
        assert await tx.auth.remove_client("c2")
        assert not await tx.auth.remove_client("c2")
        assert await tx.auth.get_client("c2") is None
        expires = T0 + timedelta(minutes=5)
        assert await tx.auth.use_assertion("c1", "j1", expires_at=expires, now=T0)
        assert not await tx.auth.use_assertion("c1", "j1", expires_at=expires, now=T0)
        assert await tx.auth.use_assertion("c1", "j2", expires_at=expires, now=T0)
        # once expired, a `jti` is forgotten (its assertion is refused for its age instead)
        later = expires + timedelta(seconds=1)
        assert await tx.auth.use_assertion("c1", "j1", expires_at=later, now=later)
