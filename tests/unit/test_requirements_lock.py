"""requirements.lock (what the Docker image installs) keeps up with pyproject.toml.

Every runtime dependency is pinned there, at a version its pyproject.toml range allows, with hashes;
a dependency added or re-ranged without compiling the lock again fails here, not in an image build.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]


def locked() -> dict[str, list[str]]:
    """name -> the versions pinned (one per environment marker) in requirements.lock."""
    pins: dict[str, list[str]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, flags=re.MULTILINE):
        pins.setdefault(canonicalize_name(name), []).append(version)
    return pins


def test_every_dependency_is_locked_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in requirements.lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{requirement.name}=={version} is outside {requirement.specifier}"
            )
    blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements.lock").read_text())
    unhashed = [b.split()[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
    assert not unhashed, unhashed
