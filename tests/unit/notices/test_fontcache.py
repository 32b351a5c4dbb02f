"""Letters rendered with the fonts parsed once a process (and their embedded subsets kept) are the
letters fpdf2 writes when it parses and subsets every font itself: same pages, same drawing
operators, same extractable text, same widths and ToUnicode maps, each code drawn with the same
glyph of an embedded font."""

from __future__ import annotations

import io
import os
import re
from dataclasses import replace
from typing import Any

import pypdf
import pytest
from fontTools.ttLib import TTFont

from fhir_adapter.notices import NoticeContext, render
from fhir_adapter.notices.fontcache import fonts_parsed
from fhir_adapter.notices.pdf import to_pdf
from fhir_adapter.notices.render import _markup, _parse
from fhir_adapter.notices.stored import context_to_json, render_stored
from fhir_adapter.services.background import render_pool
from tests.unit.notices.samples import context

LETTERS = {
    "denial-member en": context("denial-member", "en"),
    "denial-member es large print": context("denial-member", "es", large_print=True),
    "approval-requester en, Vietnamese name": context(
        "approval-requester", "en", member_display_name="Nguyễn Thị Ánh"
    ),
    "approval-member es, Cyrillic name": context(
        "approval-member", "es", member_display_name="Ольга Смирнова"
    ),
    "report-member en, Chinese name": context(
        "report-member", "en", member_display_name="王小明", large_print=True
    ),
    "denial-requester en, Armenian name": context(
        "denial-requester", "en", member_display_name="Արամ Սարգսյան"
    ),
}

_BFCHAR = re.compile(rb"^<([0-9A-F]{4})> <", re.MULTILINE)  # a code of a ToUnicode map


def _pdf(letter: NoticeContext, *, shared_fonts: bool) -> pypdf.PdfReader:
    title, blocks = _parse(_markup(letter))
    return pypdf.PdfReader(io.BytesIO(to_pdf(title, blocks, letter, shared_fonts=shared_fonts)))


def _fonts(reader: pypdf.PdfReader) -> list[dict[str, Any]]:
    """Each page's fonts: name, widths, ToUnicode map, and the glyph each used code draws."""
    pages = []
    for page in reader.pages:
        fonts: dict[str, Any] = {}
        for key, ref in sorted(page["/Resources"]["/Font"].items()):
            font = ref.get_object()
            cid_font = font["/DescendantFonts"][0].get_object()
            descriptor = cid_font["/FontDescriptor"].get_object()
            program = TTFont(io.BytesIO(descriptor["/FontFile2"].get_object().get_data()))
            order = program.getGlyphOrder()
            gid_map = cid_font["/CIDToGIDMap"].get_object().get_data()
            to_unicode = font["/ToUnicode"].get_object().get_data()
            codes = [int(code, 16) for code in _BFCHAR.findall(to_unicode.split(b"bfchar", 1)[1])]
            glyphs = {
                code: order[int.from_bytes(gid_map[code * 2 : code * 2 + 2])] for code in codes
            }
            fonts[key] = (str(font["/BaseFont"]), str(cid_font["/W"]), to_unicode, glyphs)
        pages.append(fonts)
    return pages


@pytest.mark.parametrize("name", LETTERS)
def test_a_letter_after_a_first_one_is_the_letter_fpdf2_writes_alone(name: str) -> None:
    render(context("approval-member", "en"))  # the fonts are parsed and kept from here on
    letter = LETTERS[name]

    shared, alone = _pdf(letter, shared_fonts=True), _pdf(letter, shared_fonts=False)

    assert len(shared.pages) == len(alone.pages) > 0
    assert [p.get_contents().get_data() for p in shared.pages] == [
        p.get_contents().get_data() for p in alone.pages
    ]
    assert [p.extract_text() for p in shared.pages] == [p.extract_text() for p in alone.pages]
    assert _fonts(shared) == _fonts(alone)
    assert shared.metadata == alone.metadata


def test_letters_sharing_fonts_keep_their_own_text_and_glyphs() -> None:
    """Two letters rendered one after the other (the second with other names) do not lend each
    other glyphs: each extracts its own text, and embeds every glyph it draws."""
    first = context("approval-requester", "en", member_display_name="Quentin Żak")
    second = replace(first, member_display_name="Ximena Ybarra")

    texts = []
    for letter in (first, second, first):
        reader = _pdf(letter, shared_fonts=True)
        texts.append(" ".join(" ".join(p.extract_text().split()) for p in reader.pages))
        for page in _fonts(reader):
            for _, _, _, glyphs in page.values():
                drawn = [glyph for code, glyph in glyphs.items() if code != 0]  # 0: fpdf2's .notdef
                assert drawn and ".notdef" not in drawn

    assert "Quentin Żak" in texts[0] and "Ximena Ybarra" not in texts[0]
    assert "Ximena Ybarra" in texts[1] and "Quentin Żak" not in texts[1]
    assert texts[2] == texts[0]


def test_the_render_process_keeps_its_parsed_fonts_from_one_job_to_the_next() -> None:
    job = context_to_json(context("denial-member", "es"))
    with render_pool() as pool:
        process = pool.submit(os.getpid).result()
        assert pool.submit(render_stored, job).result().pdf.startswith(b"%PDF")
        parsed = pool.submit(fonts_parsed).result()
        assert pool.submit(render_stored, job).result().pdf.startswith(b"%PDF")

        assert parsed >= 2  # the letter font, regular and bold, at least
        assert pool.submit(fonts_parsed).result() == parsed  # none parsed again
        assert pool.submit(os.getpid).result() == process
