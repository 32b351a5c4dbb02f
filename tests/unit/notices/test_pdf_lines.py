"""The notices' own PDF line breaking gives exactly the lines fpdf2's `multi_cell` would, with
the embedded DejaVu Sans the letters use and with a core font."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from fpdf import FPDF
from fpdf.enums import MethodReturnValue

from fhir_adapter.notices.pdf import FONT, LETTER_FONTS, break_lines, font_path

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-/áéíóúñÜ@#%&*Wi"
    "ễịồạươđĐ"
)


OPENED: list[FPDF] = []


@pytest.fixture(autouse=True)
def close_fonts() -> Iterator[None]:
    """fpdf2 keeps each TrueType file open until its fonts are closed."""
    yield
    while OPENED:
        for font in OPENED.pop().fonts.values():
            if hasattr(font, "close"):
                font.close()


def page(size: float, style: str = "", x: float = 20, *, ttf: bool = True) -> FPDF:
    pdf = FPDF(unit="mm", format="letter")
    OPENED.append(pdf)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    if ttf:
        pdf.add_font(FONT, "", font_path(LETTER_FONTS[0]))
        pdf.add_font(FONT, "B", font_path(LETTER_FONTS[1]))
    pdf.set_font(FONT if ttf else "Helvetica", style=style, size=size)
    pdf.set_x(x)
    return pdf


def fpdf_lines(pdf: FPDF, text: str) -> list[str]:
    lines = pdf.multi_cell(0, 5, text, align="L", dry_run=True, output=MethodReturnValue.LINES)
    assert isinstance(lines, list)
    return lines


@pytest.mark.parametrize("ttf", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_lines_match_multi_cell_on_random_text(seed: int, ttf: bool) -> None:
    rng = random.Random(seed)
    alphabet = ALPHABET if ttf else ALPHABET.encode("latin-1", "ignore").decode("latin-1")
    for _ in range(25):
        pdf = page(
            rng.choice([12, 15, 18, 22.5]), rng.choice(["", "B"]), rng.choice([20, 25, 90]), ttf=ttf
        )
        words = [
            "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 3, 6, 11, 40, 160])))
            for _ in range(rng.randint(1, 50))
        ]
        text = " ".join(words)

        assert break_lines(pdf, text) == fpdf_lines(pdf, text)


def test_a_word_wider_than_the_line_is_cut_as_fpdf2_cuts_it() -> None:
    pdf = page(12)
    text = "Reference " + "W" * 300 + " end"

    lines = break_lines(pdf, text)

    assert lines is not None and len(lines) > 2
    assert lines == fpdf_lines(pdf, text)


@pytest.mark.parametrize(
    "text", ["", "soft\u00adhyphen", "two\nlines", "tab\there", "王小明 needs the fallback font"]
)
def test_text_the_fast_path_does_not_cover_is_left_to_multi_cell(text: str) -> None:
    assert break_lines(page(12), text) is None
