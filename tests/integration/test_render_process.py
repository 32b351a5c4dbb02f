"""The render process (services/background.py): spawned again when it died, so later letters are
rendered instead of all becoming dead letters; and gone when the `serve` process it works for is
killed, so no orphan keeps rendering or holding memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from fhir_adapter.services.background import render_pool


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by a parent that is itself gone) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_a_killed_render_process_is_replaced_by_a_new_one() -> None:
    with render_pool() as pool:
        first = pool.submit(os.getpid).result(timeout=60)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):  # the call in flight when it died fails
            pool.submit(time.sleep, 5).result(timeout=60)

        second = pool.submit(os.getpid).result(timeout=60)  # the next one is rendered

        assert second != first
        assert pool.submit(sum, [1, 2, 3]).result(timeout=60) == 6


PARENT = """
import os, sys
from fhir_adapter.services.background import render_pool
pool = render_pool()
print(pool.submit(os.getpid).result(timeout=60), flush=True)
sys.stdin.read()  # until the test kills this process
"""


def test_the_render_process_exits_when_its_serve_process_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)

        parent.kill()  # SIGKILL: no cleanup of its own runs
        parent.wait(timeout=10)

        deadline = time.monotonic() + 30
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the render process outlived its serve process"
