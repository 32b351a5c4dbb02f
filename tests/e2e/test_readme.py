"""The README's two commands and its "Try it" (docs/try-it.md), followed literally (issue #17).

The commands come from the pages themselves, so the test fails when they drift: the README's
"Two commands" block must hold the install-and-serve command and the test command CI runs
verbatim, and must send the reader to docs/try-it.md. There, the first shell block of the "Try it"
section must be `serve`, which runs here as a real process on a free loopback port in a temporary
folder (the clone's `.venv` and `examples` linked in); the second block runs in bash there, with
only FHIR_ADAPTER_PORT set, the one setting the page tells the user to keep the same in both
terminals. Its output must end with the answer the page shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_live_server import free_port

pytestmark = pytest.mark.live

ROOT = Path(__file__).parents[2]
START_TIMEOUT = 30.0


FENCED = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


def try_it_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the "# Try it" section of docs/try-it.md."""
    page = (ROOT / "docs" / "try-it.md").read_text()
    section = page.split("# Try it\n", 1)[1].split("\n## ", 1)[0]
    return FENCED.findall(section)


def two_commands() -> tuple[str, str]:
    """The README's "## Two commands" section and the commands of its one shell block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    blocks = FENCED.findall(section)
    assert [language for language, _ in blocks] == ["sh"], blocks
    commands = [line for line in blocks[0][1].splitlines() if line and not line.startswith("#")]
    return section, "\n".join(commands)


def test_the_readme_has_the_two_commands_and_ci_runs_the_second_verbatim() -> None:
    section, commands = two_commands()
    serve, test = commands.splitlines()
    assert serve == (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/fhir-adapter serve"
    )
    assert test == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.replace("pip install -e", "pip install -q -e") in ci.splitlines()
    assert "(docs/try-it.md)" in section


def test_the_try_it_section_has_the_server_the_commands_and_the_answer() -> None:
    languages = [language for language, _ in try_it_blocks()]
    assert languages[:3] == ["sh", "sh", "text"], languages


def test_try_it_from_the_readme_reaches_the_decision_it_shows(tmp_path: Path) -> None:
    (_, serve), (_, commands), (_, answer) = try_it_blocks()[:3]
    assert serve.strip() == ".venv/bin/fhir-adapter serve"
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    env["FHIR_ADAPTER_PORT"] = str(port)
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            ["bash", "-c", f"exec {serve.strip()}"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        result = subprocess.run(
            ["bash", "-e", "-c", commands],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout.endswith(answer), result.stdout
    assert result.stdout.startswith('{"resourceType":"CapabilityStatement"')
    assert (tmp_path / "fhir-adapter.db").exists()  # serve's default store, in the clone's folder
