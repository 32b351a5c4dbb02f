"""fpdf2's PDF writer with the letters' fonts written from kept font programs (pure).

For each TrueType font fpdf2 subsets the font file with fontTools, builds a 128 KiB CIDToGIDMap
and compresses both, for every document: about half of a letter's CPU once the parsed fonts are
shared (docs/performance.md). `NoticeOutput` writes the same objects in the same order as
fpdf2 2.8 does for a TrueType font (Type0 font, CIDFontType2 with its widths, ToUnicode map,
CIDSystemInfo, font descriptor, CIDToGIDMap, FontFile2), taking the font program from
`fontcache.program`. Any other kind of font is left to fpdf2. The ToUnicode map and the widths
list only the glyphs the letter prints (tests/unit/notices/test_fontcache.py compares both
writers object by object).
"""

from __future__ import annotations

from typing import Any

from fpdf.fonts import TTFFont
from fpdf.output import (
    CIDSystemInfo,
    OutputProducer,
    PDFFont,
    PDFType3Font,
    _build_cmap_blocks,
    _tt_font_widths,
)
from fpdf.syntax import Name, PDFArray, PDFContentStream

from fhir_adapter.notices.fontcache import FontProgram, program

_TO_UNICODE = (
    "/CIDInit /ProcSet findresource begin\n"
    "12 dict begin\n"
    "begincmap\n"
    "/CIDSystemInfo\n"
    "<</Registry (Adobe)\n"
    "/Ordering (UCS)\n"
    "/Supplement 0\n"
    ">> def\n"
    "/CMapName /Adobe-Identity-UCS def\n"
    "/CMapType 2 def\n"
    "1 begincodespacerange\n"
    "<0000> <FFFF>\n"
    "endcodespacerange\n"
    "{blocks}"
    "endcmap\n"
    "CMapName currentdict /CMap defineresource pop\n"
    "end\n"
    "end"
)


class _FontFile(PDFContentStream):
    """fpdf2's FontFile2 stream, from a program compressed once (fpdf2 compresses it again for
    every document)."""

    def __init__(self, font_program: FontProgram) -> None:
        super().__init__(contents=font_program.compressed)
        self.filter = Name("FlateDecode")
        self.length1 = font_program.length


class NoticeOutput(OutputProducer):
    """`FPDF.output(output_producer_class=NoticeOutput)`; the letter fonts' files are the
    document's `common_fonts` (a frozenset of paths, may be absent)."""

    def _add_fonts(
        self,
        image_objects_per_index: Any,
        gfxstate_objs_per_name: Any,
        pattern_objs_per_name: Any,
    ) -> dict[int, PDFFont | PDFType3Font]:
        fonts = sorted(self.fpdf.fonts.values(), key=lambda font: font.i)
        if not all(_plain_truetype(font) for font in fonts):
            return super()._add_fonts(
                image_objects_per_index, gfxstate_objs_per_name, pattern_objs_per_name
            )
        common: frozenset[str] = getattr(self.fpdf, "common_fonts", frozenset())
        return {
            font.i: self._add_truetype(font, str(font.ttffile) in common)
            for font in fonts
            if isinstance(font, TTFFont)
        }

    def _add_truetype(self, font: TTFFont, common: bool) -> PDFFont:
        """One TrueType font, as fpdf2's `_add_fonts` writes it (a glyf font, not CFF)."""
        fontname = f"MPDFAA+{font.name}"
        used = [(glyph, code) for glyph, code in font.subset.items() if glyph is not None]
        glyphs = frozenset(glyph.glyph_name for glyph, _ in used)
        font_program = program(font, glyphs, common=common)
        composite = PDFFont(subtype="Type0", base_font=fontname, encoding="Identity-H")
        self._add_pdf_obj(composite, "fonts")
        cid_font = PDFFont(
            subtype="CIDFontType2",
            base_font=fontname,
            d_w=font.desc.missing_width,
            w=_tt_font_widths(font),
        )
        self._add_pdf_obj(cid_font, "fonts")
        composite.descendant_fonts = PDFArray([cid_font])
        to_unicode = PDFContentStream(_to_unicode(used).encode("latin-1"))
        self._add_pdf_obj(to_unicode, "fonts")
        composite.to_unicode = to_unicode
        system_info = CIDSystemInfo()
        self._add_pdf_obj(system_info, "fonts")
        cid_font.c_i_d_system_info = system_info
        descriptor = font.desc
        descriptor.font_name = Name(fontname)
        self._add_pdf_obj(descriptor, "fonts")
        cid_font.font_descriptor = descriptor
        gid_map = bytearray(256 * 256 * 2)  # code -> glyph id, two bytes each
        for glyph, code in used:
            number = font_program.glyph_ids[glyph.glyph_name]
            gid_map[code * 2 : code * 2 + 2] = number.to_bytes(2, "big")
        cid_to_gid = PDFContentStream(contents=gid_map, compress=True)
        self._add_pdf_obj(cid_to_gid, "fonts")
        cid_font.c_i_d_to_g_i_d_map = cid_to_gid
        font_file = _FontFile(font_program)
        self._add_pdf_obj(font_file, "fonts")
        descriptor.font_file2 = font_file  # type: ignore[attr-defined]
        font.subset.pick.cache_clear()
        font.subset.get_glyph.cache_clear()
        font.close()
        return composite


def _plain_truetype(font: object) -> bool:
    return isinstance(font, TTFFont) and not font.is_cff and font.color_font is None


def _to_unicode(used: list[tuple[Any, int]]) -> str:
    """The ToUnicode map of the codes the letter uses (fpdf2's format)."""
    entries = [
        f"<{code:04X}> <{''.join(_utf16(unicode) for unicode in glyph.unicode)}>\n"
        for glyph, code in used
        if isinstance(glyph.unicode, tuple) and glyph.unicode
    ]
    return _TO_UNICODE.format(blocks=_build_cmap_blocks(entries, "bfchar"))


def _utf16(unicode: int) -> str:
    if unicode > 0xFFFF:  # a surrogate pair
        high, low = 0xD800 | (unicode - 0x10000) >> 10, 0xDC00 | (unicode & 0x3FF)
        return f"{high:04X}{low:04X}"
    return f"{unicode:04X}"
