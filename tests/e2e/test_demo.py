"""`fhir-adapter demo` walks every example path through a real in-process server."""

from __future__ import annotations

import pytest

from fhir_adapter.demo import DEFAULT_PATHS, run_demo


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
