"""A serving process hides what it loaded at start from the garbage collector (issue #13): a full
collection otherwise walks every object of the libraries and FHIR models and holds up each
request in flight for over 100 ms. Run in a child process: `gc.freeze` lasts for the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import gc, json, sys
from starlette.testclient import TestClient
from fhir_adapter.api.app import create_app
from fhir_adapter.config import Settings

before = gc.get_freeze_count()
app = create_app(Settings(database_url=sys.argv[1], worker_enabled=False))
with TestClient(app) as client:  # runs the lifespan: the container is built, the heap settled
    healthy = client.get("/healthz").status_code
    frozen = gc.get_freeze_count()
    loaded = [m for m in ("fhir.resources.R4B.task", "fhir.resources.R4B.claimresponse")
              if m in sys.modules]
print(json.dumps({"before": before, "frozen": frozen, "healthy": healthy, "loaded": loaded}))
"""


def test_a_started_app_has_its_models_loaded_and_frozen(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fhir.db'}"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["healthy"] == 200
    assert seen["before"] == 0
    # the libraries and every served type's model: well over a hundred thousand objects
    assert seen["frozen"] > 100_000
    assert seen["loaded"] == ["fhir.resources.R4B.task", "fhir.resources.R4B.claimresponse"]
