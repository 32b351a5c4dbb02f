"""CPU per letter of the notice renderer (text, HTML and PDF), this tree against a git ref.

The worker renders each notice in a long-lived process (`services/background.py`), so what counts
is the CPU per letter once that process is warm. This script renders a mix of letters: every kind,
English and Spanish, normal and large print, member names in Latin, Vietnamese and Cyrillic
letters (member letters also print the taglines: Chinese, Japanese, Armenian...), each member name
and provider different. Each tree renders in a child process of its own (`git archive` of the ref
into a temporary folder for the baseline), after a warm-up pass; the children alternate for
`--rounds` rounds so both see the same machine load, and each reports `time.process_time()` per
letter. The ratio of the medians is the figure to quote; absolute times vary with the load.

    .venv/bin/python benchmarks/letter_render.py [--baseline main] [--letters 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIRST = (
    "Maria", "John", "Ánh", "Иван", "José", "Quentin", "Đức", "Ольга", "Kwame", "Łukasz", "Zoë",
    "Björn", "Yusuf", "Xóchitl", "Hương", "Pilar", "Wendell", "Guðrún", "Ngozi", "Chloé",
)  # fmt: skip
LAST = (
    "Lopez", "Smith", "Nguyễn", "Петров", "Álvarez Núñez", "Zhao", "Trần", "Смирнова", "Osei",
    "Wójcik", "Fitzgerald", "Quiñones", "Yamamoto", "Kowalczyk", "Vũ", "Jiménez", "Brooks",
)  # fmt: skip


def _letters(count: int, seed: int) -> list[Any]:
    """`count` notice contexts cycling through kinds, languages and print sizes, each member and
    provider named at random (so the letters' glyph sets vary as real names make them vary)."""
    sys.path.append(str(ROOT))  # the samples; fhir_adapter comes from PYTHONPATH first
    from fhir_adapter.notices import LANGUAGES, NOTICE_KINDS, NoticeProvider
    from tests.unit.notices.samples import context

    rng = random.Random(seed)

    def name() -> str:
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"

    letters = []
    for number in range(count):
        kind = NOTICE_KINDS[number % len(NOTICE_KINDS)]
        language = LANGUAGES[(number // len(NOTICE_KINDS)) % len(LANGUAGES)]
        extra: dict[str, Any] = {"member_display_name": name(), "large_print": number % 3 == 0}
        if kind in ("approval-member", "approval-requester"):
            extra["providers"] = (NoticeProvider(f"Dr. {name()}", "Cardiology", "", None),)
        letters.append(context(kind, language, **extra))
    return letters


def _child(count: int) -> None:
    """Render letters to warm up, then other letters measured; print the CPU per letter."""
    from fhir_adapter.notices import render

    warm_up, letters = _letters(count, seed=1), _letters(count, seed=2)
    started = time.process_time()
    render(warm_up[0])
    first = time.process_time() - started
    for letter in warm_up:
        render(letter)
    started = time.process_time()
    for letter in letters:
        render(letter)
    per_letter = (time.process_time() - started) / len(letters)
    import fhir_adapter

    print(
        json.dumps(
            {
                "first_ms": first * 1000,
                "per_letter_ms": per_letter * 1000,
                "package": fhir_adapter.__file__,
            }
        )
    )


def _run(tree: Path, count: int) -> dict[str, Any]:
    """One child rendering with `tree`'s fhir_adapter (the tests' samples come from this tree)."""
    env = {"PYTHONPATH": f"{tree}{':' + str(ROOT) if tree != ROOT else ''}", "PATH": "/usr/bin"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--letters", str(count)],
        capture_output=True,
        check=True,
        env=env,
        cwd=tree,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git ref to compare with")
    parser.add_argument("--letters", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.letters)
        return
    archive = subprocess.run(
        ["git", "archive", args.baseline, "fhir_adapter"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        runs: dict[str, list[dict[str, Any]]] = {args.baseline: [], "this tree": []}
        for _ in range(args.rounds):
            runs[args.baseline].append(_run(Path(folder), args.letters))
            runs["this tree"].append(_run(ROOT, args.letters))
    medians = {}
    for label, results in runs.items():
        per_letter = [r["per_letter_ms"] for r in results]
        medians[label] = statistics.median(per_letter)
        print(
            f"{label:>10}: {medians[label]:7.2f} ms CPU a letter (median of "
            f"{', '.join(f'{v:.2f}' for v in per_letter)}), first letter of the process "
            f"{statistics.median(r['first_ms'] for r in results):.0f} ms ({results[0]['package']})"
        )
    ratio = medians[args.baseline] / medians["this tree"]
    print(f"{args.letters} letters a round, {args.rounds} rounds: {ratio:.2f}x less CPU a letter")


if __name__ == "__main__":
    main()
