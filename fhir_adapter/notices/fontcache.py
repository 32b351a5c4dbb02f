"""The letters' fonts, parsed once a process and lent to each letter (pure: reads only the
packaged fonts).

fpdf2's `add_font` parses a TrueType file (tables, character map, widths) for every document, and
writing the PDF subsets the font with fontTools, recompiling every glyph it keeps: together about
two thirds of a letter's CPU (docs/performance.md). Here each font is parsed once
(`_prototype`) and each letter gets a copy (`add_font`) with its own glyph subset, widths table
and font descriptor (the parts a document changes), sharing the read-only character map. The
font programs embedded in the PDFs (`program`) are subset once per glyph set and kept: the
letter font's glyph set is rounded up to the ASCII letters and digits, so letters that differ
only in names, dates and numbers mostly share one program. They are cut from a small cut of the
letter font (the templates' and built-in taglines' characters, common Latin, Vietnamese) when
it has the glyphs, else from the whole file.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass
from functools import cache, lru_cache
from io import BytesIO

from fontTools import subset
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

from fhir_adapter.notices.catalog import BUILT_IN_TAGLINES, ENGLISH_TAGLINE

# Besides the taglines' own characters: ASCII, Latin-1, Latin Extended-A, Vietnamese, punctuation,
# the euro and trade marks. A letter printing anything else is subset from the whole font file.
COMMON_RANGES = (
    (0x20, 0x7E),
    (0xA0, 0x17F),
    (0x1EA0, 0x1EF9),
    (0x2010, 0x203A),
    (0x20AC, 0x20AC),
    (0x2122, 0x2122),
)
# What a letter font's glyph set is rounded up to: letters that differ only in names, dates and
# numbers share one program, for about 2 KB more a letter (docs/performance.md).
ROUNDED_UP = tuple(map(ord, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
# The tables fpdf2 drops when it subsets a font for a PDF (fpdf/output.py).
_DROPPED_TABLES = ["FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta", "sbix", "CBDT"]
_DROPPED_TABLES += ["CBLC", "EBDT", "EBLC", "EBSC", "SVG ", "CPAL", "COLR"]


@dataclass(frozen=True, slots=True)
class FontProgram:
    """A subset font file as the PDF embeds it (FontFile2), compressed, and its glyph ids."""

    compressed: bytes
    length: int  # uncompressed (the stream's Length1)
    glyph_ids: dict[str, int]


@cache
def _file(path: str) -> bytes:
    with open(path, "rb") as font_file:
        return font_file.read()


@cache
def _prototype(path: str, style: str) -> TTFFont:
    """The font as fpdf2's `add_font` parses it; its file is closed again."""
    pdf = FPDF()
    pdf.add_font("prototype", style, path)
    (font,) = pdf.fonts.values()
    assert isinstance(font, TTFFont)
    font.close()
    return font


def add_font(pdf: FPDF, family: str, style: str, path: str) -> None:
    """What `pdf.add_font(family, style, path)` does, from the font parsed once a process."""
    prototype = _prototype(path, style)
    font = copy.copy(prototype)
    font.i = len(pdf.fonts) + 1
    font.fontkey = f"{family.lower()}{style}"
    font.cw = copy.copy(prototype.cw)  # a defaultdict: a lookup of a missing character adds it
    font.desc = copy.copy(prototype.desc)  # the PDF writer sets its object id and font file
    font.missing_glyphs = []
    font.biggest_size_pt = 0
    font.subset = SubsetMap(font)
    font.ttfont = _open(_file(path))  # read lazily: only fpdf2's own font writer would use it
    pdf.fonts[font.fontkey] = font


def fonts_parsed() -> int:
    """How many fonts this process has parsed (each once)."""
    return _prototype.cache_info().currsize


def program(font: TTFFont, glyphs: frozenset[str], *, common: bool) -> FontProgram:
    """The font program embedding `glyphs` of `font`; `common`: a letter font, whose glyph set is
    rounded up and cut from the common cut when that has every glyph."""
    path = str(font.ttffile)
    if common and _common_cut(path)[1].issuperset(glyphs):
        rounded = (font.cmap[code] for code in ROUNDED_UP if code in font.cmap)
        return _program(path, glyphs.union(rounded), from_cut=True)
    return _program(path, glyphs, from_cut=False)


@lru_cache(maxsize=256)  # a program is 10 to 40 KB
def _program(path: str, glyphs: frozenset[str], *, from_cut: bool) -> FontProgram:
    """`glyphs` subset as fpdf2 subsets them, with the bounding boxes as they are in the file."""
    options = subset.Options(notdef_outline=True, recommended_glyphs=True)
    options.drop_tables += _DROPPED_TABLES
    font = _open(_common_cut(path)[0] if from_cut else _file(path))
    subsetter = subset.Subsetter(options)
    subsetter.populate(glyphs=sorted(glyphs))
    subsetter.subset(font)
    out = BytesIO()
    font.save(out)
    data = out.getvalue()
    glyph_ids = {name: number for number, name in enumerate(font.getGlyphOrder())}
    return FontProgram(zlib.compress(data), len(data), glyph_ids)


def _open(data: bytes) -> TTFont:
    """A fontTools font over bytes in memory, read lazily, written without recalculating the
    bounding boxes (recalculating them recompiled every glyph it kept)."""
    return TTFont(BytesIO(data), lazy=True, recalcTimestamp=False, recalcBBoxes=False)


@cache
def _common_cut(path: str) -> tuple[bytes, frozenset[str]]:
    """The font file cut to the common characters (same glyph names, outlines and order), and
    the glyph names it keeps."""
    unicodes = {code for low, high in COMMON_RANGES for code in range(low, high + 1)}
    for tagline in (ENGLISH_TAGLINE, *BUILT_IN_TAGLINES.values()):
        unicodes.update(ord(char) for char in tagline)
    options = subset.Options(
        notdef_outline=True,
        recommended_glyphs=True,
        glyph_names=True,  # fpdf2 names glyphs by the whole file's character map
        name_IDs=["*"],
        name_languages=["*"],
        layout_features=["*"],
        hinting=True,
    )
    font = _open(_file(path))
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=unicodes)
    subsetter.subset(font)
    out = BytesIO()
    font.save(out)
    return out.getvalue(), frozenset(font.getGlyphOrder())
