"""`fhir-adapter demo` walks every example path through a real in-process server."""

from __future__ import annotations

import pytest

from fhir_adapter.demo.walkthrough import DEFAULT_PATHS, in_process_service, run_demo


@pytest.mark.live
async def test_demo_walks_every_path() -> None:
    lines: list[str] = []
    good = await run_demo(None, say=lines.append)
    text = "\n".join(lines)
    assert good == len(DEFAULT_PATHS), text
    for expected in (
        "NA / Task accepted (approved-in-network)",
        "A1 / Task accepted (approved-out-of-network)",
        "A3 / Task rejected (denied)",
        "A4 / Task on-hold (pending-review)",
        "authorized SMO-",
        "is completed",
        "completed (delivered to the PCP's FHIR endpoint)",
        "completed (readable through the API)",
        "notice    to member: ",
        "notice    to requester: ",
        "/ehr/valley-medical-group/fhir holds ",
    ):
        assert expected in text


@pytest.mark.live
async def test_demo_runs_again_against_the_same_service() -> None:
    """`demo --url` twice on one database: the second run finds the same requests (resubmission
    creates nothing new), shows their decisions and notices, and says why the report is refused."""
    async with in_process_service() as (url, credentials):
        first: list[str] = []
        second: list[str] = []
        assert await run_demo(url, credentials=credentials, say=first.append) == len(DEFAULT_PATHS)
        assert await run_demo(url, credentials=credentials, say=second.append) == len(DEFAULT_PATHS)
    first_text, second_text = "\n".join(first), "\n".join(second)
    # the report's copies only: one to the PCP, one to the member (not the decision's notices)
    report = first_text.split("== consultation report", 1)[1]
    assert report.count("   to PCP    ") == 1, report
    assert report.count("   to member ") == 1, report
    # each decision lists its own notices, and the second run finds the same ones, no more
    notices = [line for line in first if line.startswith("   notice ")]
    assert len(notices) >= len(DEFAULT_PATHS)
    assert len([line for line in second if line.startswith("   notice ")]) == len(notices)
    assert "NA / Task completed (completed)" in second_text, second_text
    again = second_text.split("== consultation report", 1)[1]
    assert "-> HTTP 422" in again and "refused" in again, again
