"""The notices' own PDF line breaking gives exactly the lines fpdf2's `multi_cell` would."""

from __future__ import annotations

import random

import pytest
from fpdf import FPDF
from fpdf.enums import MethodReturnValue

from fhir_adapter.notices.render import _break_lines, pdf_safe

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-/áéíóúñÜ@#%&*Wi"
)


def page(size: float, style: str = "", x: float = 20) -> FPDF:
    pdf = FPDF(unit="mm", format="letter")
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", style=style, size=size)
    pdf.set_x(x)
    return pdf


def fpdf_lines(pdf: FPDF, text: str) -> list[str]:
    lines = pdf.multi_cell(0, 5, text, align="L", dry_run=True, output=MethodReturnValue.LINES)
    assert isinstance(lines, list)
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_lines_match_multi_cell_on_random_text(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        pdf = page(rng.choice([8, 10.5, 12, 15]), rng.choice(["", "B"]), rng.choice([20, 25, 90]))
        words = [
            "".join(rng.choice(ALPHABET) for _ in range(rng.choice([1, 3, 6, 11, 40, 160])))
            for _ in range(rng.randint(1, 50))
        ]
        text = " ".join(words)

        assert _break_lines(pdf, text) == fpdf_lines(pdf, text)


def test_a_word_wider_than_the_line_is_cut_as_fpdf2_cuts_it() -> None:
    pdf = page(10.5)
    text = "Reference " + "W" * 300 + " end"

    lines = _break_lines(pdf, text)

    assert lines is not None and len(lines) > 2
    assert lines == fpdf_lines(pdf, text)


@pytest.mark.parametrize("text", ["", "soft\u00adhyphen", "two\nlines", "tab\there"])
def test_text_the_fast_path_does_not_cover_is_left_to_multi_cell(text: str) -> None:
    assert _break_lines(page(10.5), pdf_safe(text)) is None
