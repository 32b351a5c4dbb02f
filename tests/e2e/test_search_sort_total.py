"""Issue #13 through the API, on both backends: `_sort` and `_total` in the Bundle and its links,
an unsupported `_sort` or `_total` refused under `handling=strict` and left out of the `self`
link otherwise, and `_cursor` values this server did not give refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from fhir_adapter.fhir.bundles import searchset
from fhir_adapter.fhir.search import SearchCursor, parse_search
from fhir_adapter.ports.store import SearchPage
from tests.conftest import BASE_URL
from tests.fakes import FrozenClock

STRICT = {"Prefer": "handling=strict"}


async def organizations(client: httpx.AsyncClient, clock: FrozenClock) -> list[str]:
    """Five Organizations a minute apart, oldest first."""
    made = []
    for n in range(5):
        response = await client.post("/Organization", json={"resourceType": "Organization", "name": f"Org {n}"})  # fmt: skip
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
        clock.advance(minutes=1)
    return made


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((k["url"] for k in bundle["link"] if k["relation"] == relation), None)


def issue_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue: dict[str, Any] = body["issue"][0]
    assert issue["code"] == "invalid", body
    return issue


async def test_sort_pages_newest_first_through_next_links(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    made = await organizations(client, clock)
    url: str | None = "/Organization?name=org&_sort=-_lastUpdated&_count=2"
    seen: list[str] = []
    while url:
        bundle = (await client.get(url)).json()
        assert bundle["total"] == 5
        assert parse_qs(urlsplit(link(bundle, "self") or "").query)["_sort"] == ["-_lastUpdated"]
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        url = link(bundle, "next")
        if url:
            assert parse_qs(urlsplit(url).query)["_sort"] == ["-_lastUpdated"]
    assert seen == made[::-1]


async def test_unsupported_sort_is_refused_when_strict_and_ignored_otherwise(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    made = await organizations(client, clock)
    issue = issue_of(await client.get("/Organization?name=org&_sort=name", headers=STRICT))
    assert issue["expression"] == ["_sort"] and "_lastUpdated" in issue["diagnostics"]
    lenient = (await client.get("/Organization?name=org&_sort=name")).json()
    assert [e["resource"]["id"] for e in lenient["entry"]] == made  # key order: not sorted
    assert "_sort" not in (link(lenient, "self") or "")  # the self link shows it was not applied
    issue = issue_of(await client.get("/Organization?name=org&_total=some", headers=STRICT))
    assert issue["expression"] == ["_total"]


async def test_total_none_leaves_total_out_and_accurate_counts(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await organizations(client, clock)
    none = (await client.get("/Organization?name=org&_total=none&_count=2")).json()
    assert "total" not in none and len(none["entry"]) == 2
    later = (await client.get(link(none, "next") or "")).json()
    assert "total" not in later and "_total=none" in (link(later, "self") or "")
    accurate = (await client.get("/Organization?name=org&_total=accurate&_count=2")).json()
    assert accurate["total"] == 5
    assert all(e["search"]["mode"] == "match" for e in accurate["entry"])


async def test_cursors_the_server_did_not_give_are_400(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await organizations(client, clock)
    bundle = (await client.get("/Organization?name=org&_sort=_lastUpdated&_count=2")).json()
    cursor = parse_qs(urlsplit(link(bundle, "next") or "").query)["_cursor"][0]
    for bad in ("not-a-cursor", cursor[:-3], "W10"):
        issue = issue_of(
            await client.get(f"/Organization?name=org&_sort=_lastUpdated&_cursor={bad}")
        )
        assert issue["expression"] == ["_cursor"], bad
    # a cursor of one order is no position in another
    issue = issue_of(
        await client.get(f"/Organization?name=org&_sort=-_lastUpdated&_cursor={cursor}")
    )
    assert issue["expression"] == ["_cursor"]
    issue_of(await client.get(f"/Organization?name=org&_cursor={cursor}"))


def test_an_estimated_total_is_marked_by_an_outcome_entry() -> None:
    query = parse_search("Task", [("status", "accepted")], base_url=None, default_count=50, max_count=500)  # fmt: skip
    cursor = SearchCursor("", 7, total=250_000, estimated=True)
    bundle = searchset(BASE_URL, query, SearchPage([], [], 250_000, cursor, True))
    assert bundle["total"] == 250_000
    (note,) = bundle["entry"]
    assert note["search"] == {"mode": "outcome"}
    issue = note["resource"]["issue"][0]
    assert (issue["severity"], issue["code"], issue["expression"]) == (
        "information",
        "informational",
        ["Bundle.total"],
    )
    # the next link's cursor round-trips, total and all
    pairs = [(k, v[0]) for k, v in parse_qs(urlsplit(link(bundle, "next") or "").query).items()]
    again = parse_search("Task", pairs, base_url=None, default_count=50, max_count=500)
    assert again.cursor == cursor


async def test_the_capability_statement_names_the_sort_key(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    (task,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Task"]
    (updated,) = [p for p in task["searchParam"] if p["name"] == "_lastUpdated"]
    assert "_sort=_lastUpdated" in updated["documentation"]
    assert "_sort=-_lastUpdated" in updated["documentation"]
