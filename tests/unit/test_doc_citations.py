"""The documentation is a map that must stay true: every "contract §N", "regulatory.md §N" and
"fhir.md §N" the code, the tests, the profiles and the docs cite names a section of
docs/contract.md, docs/regulatory.md or docs/fhir.md; every relative link in README.md and docs/*.md reaches a file (and its
heading, when it names one); docs/configuration.md lists every setting of config.py; and the
search parameters contract §2 promises are the server's."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from fhir_adapter.config import Settings
from fhir_adapter.fhir.search_parameters import params_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CITING = ("fhir_adapter", "tests", "profiles", "docs", "benchmarks")
TEXT_SUFFIXES = {".py", ".md", ".json", ".txt", ".html", ".j2", ".toml"}

SECTION = r"§\s?(\d+(?:\.\d+)*)"
# "contract §3", "contract §3-§4", "contract §4.4, §4.5", "regulatory.md §5.3, §5.6", "fhir.md §1.5-1.7"
CITATION = re.compile(
    r"\b(contract|regulatory\.md|fhir\.md)\s+"
    + SECTION
    + r"((?:\s*(?:,|and)\s*§\s?\d+(?:\.\d+)*|\s*[-\u2013]\s*§?\s?\d+(?:\.\d+)*)*)"
)
FOLLOWING = re.compile(r"(\d+(?:\.\d+)*)")
DOCUMENTS = {
    "contract": DOCS / "contract.md",
    "regulatory.md": DOCS / "regulatory.md",
    "fhir.md": DOCS / "fhir.md",
}
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED_HEADING = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def headings(markdown: str) -> list[str]:
    """The heading texts of a Markdown page, outside fenced code blocks."""
    found: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append(match.group(2))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in headings(markdown):
        base = slug(heading)
        count = seen.get(base, 0)
        result.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def numbered_sections(path: Path) -> set[str]:
    """The section numbers of a page: "## 4. What..." is 4, "### 4.4 Decide" is 4.4."""
    numbers = set()
    for heading in headings(path.read_text(encoding="utf-8")):
        match = NUMBERED_HEADING.match(heading)
        if match:
            numbers.add(match.group(1))
    return numbers


def cited_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in CITING:
        files += [
            path
            for path in sorted((ROOT / folder).rglob("*"))
            if path.suffix in TEXT_SUFFIXES and path.is_file() and "vendor" not in path.parts
        ]
    return files


def citations() -> list[tuple[str, str, str]]:
    """(where, document, section) of every citation."""
    found = []
    for path in cited_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            document = match.group(1)
            found.append((where, document, match.group(2)))
            found += [(where, document, more) for more in FOLLOWING.findall(match.group(3))]
    return found


def test_the_citation_finder_reads_every_form_used() -> None:
    sample = (
        "contract §3-§4, contract §4.4, §4.5; regulatory.md §5.3, §5.6 and contract §1, 42 CFR;"
        " fhir.md §1.5-1.7, fhir.md §3.4, §1.9, contract §3\u2013§5"
    )
    found = [
        (m.group(1), m.group(2), FOLLOWING.findall(m.group(3))) for m in CITATION.finditer(sample)
    ]
    assert found == [
        ("contract", "3", ["4"]),
        ("contract", "4.4", ["4.5"]),
        ("regulatory.md", "5.3", ["5.6"]),
        ("contract", "1", []),
        ("fhir.md", "1.5", ["1.7"]),
        ("fhir.md", "3.4", ["1.9"]),
        ("contract", "3", ["5"]),
    ]


def test_the_code_cites_the_contract_and_the_regulatory_basis() -> None:
    documents = {document for _, document, _ in citations()}
    assert documents == set(DOCUMENTS)


def test_every_citation_names_a_section_of_the_document_in_the_repository() -> None:
    sections = {name: numbered_sections(path) for name, path in DOCUMENTS.items()}
    missing = [
        f"{where}: {document} §{section}"
        for where, document, section in citations()
        if section not in sections[document]
    ]
    assert not missing, "cited sections with no heading in docs/: " + ", ".join(missing)


def test_no_document_points_outside_the_repository() -> None:
    outside = [
        str(path.relative_to(ROOT))
        for path in cited_files()
        if "/work/shared" in path.read_text(encoding="utf-8", errors="replace")
        and path.resolve() != Path(__file__).resolve()
    ]
    assert not outside, outside


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "profiles" / "README.md", *sorted(DOCS.glob("*.md"))]


def links() -> list[tuple[Path, str]]:
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        fenced = False
        for line in text.splitlines():
            if FENCE.match(line):
                fenced = not fenced
                continue
            if fenced:
                continue
            line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
            for match in LINK.finditer(line):
                found.append((page, match.group(1) or match.group(2)))
    return found


def test_every_page_links_somewhere() -> None:
    by_page = {page for page, _ in links()}
    assert ROOT / "README.md" in by_page
    assert {DOCS / name for name in ("contract.md", "configuration.md")} <= by_page


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_its_heading(page: Path) -> None:
    broken = []
    for source, target in links():
        if source != page or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # another page's links, or an absolute URL (http:, mailto:)
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
            continue
        markdown = destination.read_text(encoding="utf-8") if destination.suffix == ".md" else ""
        if fragment and markdown and fragment not in anchors(markdown):
            broken.append(f"{target}: no heading #{fragment}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_slugs_are_githubs() -> None:
    assert slug("The PAS lifecycle: inquire, update, cancel") == (
        "the-pas-lifecycle-inquire-update-cancel"
    )
    assert slug("4.1 Decision time frames (amending § 438.210(d))") == (
        "41-decision-time-frames-amending--438210d"
    )
    assert slug("Prior-authorization metrics (CMS-0057-F)") == (
        "prior-authorization-metrics-cms-0057-f"
    )
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_the_configuration_page_lists_every_setting() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(FHIR_ADAPTER_[A-Z0-9_]+)`", page))
    settings = {f"FHIR_ADAPTER_{name.upper()}" for name in Settings.model_fields}
    assert not settings - listed, (
        f"settings missing from docs/configuration.md: {settings - listed}"
    )
    assert not listed - settings - {"FHIR_ADAPTER_TOKEN_LIFETIME_SECONDS"}, (
        f"docs/configuration.md names settings that do not exist: {listed - settings}"
    )


def test_the_contracts_search_parameters_are_the_servers() -> None:
    """contract §2 lists search parameters clients rely on: each is one the server has."""
    contract = (DOCS / "contract.md").read_text(encoding="utf-8")
    section = contract.split("\n## 2. ", 1)[1].split("\n## 3. ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (`.*`) \|$", section, flags=re.MULTILINE)
    assert len(rows) >= 6, rows
    missing = [
        f"{resource_type}?{name}"
        for resource_type, names in rows
        for name in re.findall(r"`([\w-]+)`", names)
        if name not in params_for(resource_type)
    ]
    assert not missing, missing
