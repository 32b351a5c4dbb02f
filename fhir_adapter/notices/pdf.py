"""Lay a notice's blocks out as a PDF a member can read (pure: reads only the packaged fonts).

Body text is 12 pt, or 18 pt in large print, headings larger (regulatory.md §5.6: 12-point
minimum, 18-point large print; HSC 1368.02(b) wants its statement in 12-point bold). The text is
set in DejaVu Sans (Bitstream Vera license, fonts/LICENSE-DejaVu.txt): a letter cut of it
(Latin with Vietnamese, Greek, Cyrillic, punctuation; no hinting or layout tables). What the
cut lacks comes from fallback fonts used only when a letter needs them: the full DejaVu Sans
(Armenian, Georgian, symbols...), a subset of Droid Sans Fallback with the built-in taglines'
Chinese and Japanese characters, and the whole of Droid Sans Fallback (Apache-2.0,
fonts/LICENSE-Apache-2.0.txt) for other CJK text such as names. The fonts are parsed once a
process and their embedded subsets kept (`fontcache`, `pdf_output`): fpdf2 alone parses and
subsets every font for every letter, most of a letter's CPU. The PDF embeds only the glyphs used
(the letter font's rounded up to the ASCII letters and digits), with a ToUnicode map, so the
text can be extracted and searched. The document language is set (/Lang); fpdf2 writes no full
structure tree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import TTFFont
from fpdf.output import OutputProducer

from fhir_adapter.notices.blocks import Block
from fhir_adapter.notices.fontcache import add_font as add_shared_font
from fhir_adapter.notices.model import Language, NoticeContext
from fhir_adapter.notices.pdf_output import NoticeOutput

BODY_PT = 12.0
LARGE_PRINT_PT = 18.0
FONT = "NoticeSans"
LETTER_FONTS = ("DejaVuSansLetter.ttf", "DejaVuSansLetter-Bold.ttf")  # regular, bold
# The fallbacks in the order fpdf2 tries them, each loaded only when the letter needs it.
FALLBACK_FONTS = ("DejaVuSans.ttf", "NoticeTaglines.ttf", "DroidSansFallbackFull.ttf")
_PT_TO_MM = 25.4 / 72
_LEADING = 1.4  # line height as a multiple of the font size

_PAGE_LABEL: dict[Language, str] = {
    "en": "Page {page} of {pages}",
    "es": "Página {page} de {pages}",
}


@cache
def font_path(name: str) -> Path:
    return Path(str(resources.files("fhir_adapter.notices").joinpath("fonts", name)))


@cache
def font_characters(name: str) -> frozenset[int]:
    """The code points a packaged font file can print."""
    from fontTools.ttLib import TTFont  # a dependency of fpdf2

    with TTFont(str(font_path(name)), lazy=True) as font:
        return frozenset(font.getBestCmap())


def primary_characters() -> frozenset[int]:
    """The code points the letter font prints in both weights."""
    return font_characters(LETTER_FONTS[0]) & font_characters(LETTER_FONTS[1])


def _add_fonts(pdf: _NoticePdf, missing: frozenset[int], *, shared: bool) -> None:
    """The letter font, and the fallbacks that print the characters it lacks; `shared`: parsed
    once a process (`fontcache`), else by fpdf2 for this letter alone."""
    add_font = add_shared_font if shared else FPDF.add_font
    add_font(pdf, FONT, "", str(font_path(LETTER_FONTS[0])))
    add_font(pdf, FONT, "B", str(font_path(LETTER_FONTS[1])))
    for number, name in enumerate(FALLBACK_FONTS):
        found = missing & font_characters(name)
        if found:
            add_font(pdf, f"NoticeFallback{number}", "", str(font_path(name)))
            pdf.fallbacks.append(f"NoticeFallback{number}")
            missing -= found


class _NoticePdf(FPDF):
    def __init__(self, page_label: str, size: float, running_head: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="letter")
        self._page_label = page_label
        self._footer_size = size
        self._running_head = running_head
        self.fallbacks: list[str] = []  # the fallback fonts this letter needs
        self.common_fonts = frozenset(str(font_path(name)) for name in LETTER_FONTS)
        self._falling_back = False

    def fall_back_for(self, text: str) -> bool:
        """Let fpdf2 look for fallback fonts only in text the current font cannot print (with
        them set it parses all text character by character); returns whether it did before."""
        cmap = getattr(self.current_font, "cmap", None)
        wanted = bool(self.fallbacks) and (
            cmap is None or any(ord(char) not in cmap for char in text if char != "\n")
        )
        return self._fall_back(wanted)

    def _fall_back(self, wanted: bool) -> bool:
        before = self._falling_back
        if wanted != before:  # exact_match=False: the fallbacks have no bold face
            self.set_fallback_fonts(self.fallbacks if wanted else [], exact_match=False)
            self._falling_back = wanted
        return before

    def header(self) -> None:
        """From page 2 on: whose letter this is. It also starts each page in the letter's own
        font: fpdf2 loses track of the font when a page starts with fallback-font text."""
        if self.page_no() > 1:
            self.set_font(FONT, size=self._footer_size)
            head, room = self._running_head, self.epw - 2 * self.c_margin
            resume = self.fall_back_for(head)
            while len(head) > 1 and self.get_string_width(head) > room:
                head = head[:-2] + "\u2026"  # shortened to fit the line
            self.cell(0, _line(self._footer_size), head, align="L")
            self.ln(_line(self._footer_size) * 1.5)
            self._fall_back(resume)  # the text the page break interrupted

    def footer(self) -> None:
        self.set_y(-18)
        self.set_font(FONT, size=self._footer_size)
        label = self._page_label.format(page=self.page_no(), pages="{nb}")
        resume = self.fall_back_for(label)
        self.cell(0, 10, label, align="C")
        self._fall_back(resume)


def to_pdf(
    title: str, blocks: tuple[Block, ...], context: NoticeContext, *, shared_fonts: bool = True
) -> bytes:
    """The letter as a PDF; `shared_fonts=False` leaves the fonts to fpdf2 alone, as the tests
    that compare both do."""
    head = f"{context.plan.name} | {context.member_id or context.member_display_name}"
    pdf = _NoticePdf(_PAGE_LABEL[context.language], _body_size(context), head)
    _add_fonts(pdf, _missing_characters(title, blocks), shared=shared_fonts)
    try:
        _lay_out(pdf, title, blocks, context)
        return bytes(
            pdf.output(output_producer_class=NoticeOutput if shared_fonts else OutputProducer)
        )
    finally:
        if not shared_fonts:  # fpdf2 keeps each font file open
            for font in pdf.fonts.values():
                if isinstance(font, TTFFont):
                    font.close()


def _body_size(context: NoticeContext) -> float:
    return LARGE_PRINT_PT if context.large_print else BODY_PT


def _lay_out(
    pdf: _NoticePdf, title: str, blocks: tuple[Block, ...], context: NoticeContext
) -> None:
    body = _body_size(context)
    heading, title_size = body * 1.25, body * 1.5
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=22)
    # Fixed metadata: the same notice always gives the same bytes.
    pdf.set_creation_date(datetime.combine(context.notice_date, datetime.min.time(), tzinfo=UTC))
    pdf.set_title(title)
    pdf.set_author(context.plan.name)
    pdf.set_lang(context.language)
    pdf.add_page()

    pdf.set_font(FONT, style="B", size=title_size)
    _write(pdf, _line(title_size), title)
    gap = body * _PT_TO_MM * 0.6
    for block in blocks:
        if block.kind == "page":
            pdf.add_page()
            continue
        pdf.ln(gap)
        if block.kind == "heading":
            if pdf.get_y() > pdf.page_break_trigger - 4 * _line(body):
                pdf.add_page()  # keep a heading with the text under it
            else:
                pdf.ln(gap / 2)
            pdf.set_font(FONT, style="B", size=heading)
            _write(pdf, _line(heading), block.text)
            continue
        pdf.set_font(FONT, style="B" if block.kind == "strong" else "", size=body)
        height = _line(body)
        if block.kind in ("paragraph", "strong"):
            _write(pdf, height, block.text)
        elif block.kind == "bullets":
            indent = body * _PT_TO_MM * 1.1
            for item in block.lines:
                pdf.fall_back_for("\u2022")
                pdf.cell(indent, height, "\u2022")
                _write(pdf, height, item)
                pdf.ln(gap / 3)
        else:
            for line in block.lines:
                _write(pdf, height, line)


def _line(size: float) -> float:
    return size * _PT_TO_MM * _LEADING


def _missing_characters(title: str, blocks: tuple[Block, ...]) -> frozenset[int]:
    """The characters of the letter that DejaVu Sans cannot print."""
    covered = primary_characters()
    texts = [title, *(line for block in blocks for line in block.lines)]
    return frozenset(ord(char) for text in texts for char in text if ord(char) not in covered) - {
        ord(char) for char in " \n"
    }


def printable(text: str) -> bool:
    """Whether the packaged fonts have a glyph for every character of `text`."""
    fonts = [primary_characters(), *(font_characters(name) for name in FALLBACK_FONTS)]
    return all(char.isspace() or any(ord(char) in f for f in fonts) for char in text)


def _write(pdf: _NoticePdf, height: float, text: str) -> None:
    """Left-aligned (ragged right reads more easily), wrapped, then back to the left margin."""
    pdf.fall_back_for(text)
    lines = break_lines(pdf, text)
    if lines is None:
        pdf.multi_cell(0, height, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        return
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        pdf.cell(
            0,
            height,
            line,
            align="L",
            new_x=XPos.LMARGIN if last else XPos.LEFT,
            new_y=YPos.NEXT,
        )


# Characters that fpdf2's line breaker treats specially (other spaces, soft hyphen, line breaks):
# text holding one goes to `multi_cell` itself.
_SPECIAL = frozenset("\u00a0\u00ad\t\n\r\f\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007")
_TOLERANCE = 1e-9  # fpdf.util.FloatTolerance


def _simple_width(pdf: FPDF, text: str) -> Callable[[str], float] | None:
    """A character's width in font units, when one font prints all of `text` the simple way
    `break_lines` follows (no shaping, spacing, stretching or special characters); else None."""
    font = pdf.current_font
    widths = getattr(font, "cw", None)
    if (
        not text
        or font is None
        or not isinstance(widths, dict)
        or pdf.text_shaping
        or pdf.char_spacing
        or pdf.font_stretching != 100
        or any(char in _SPECIAL for char in text)
    ):
        return None
    if pdf.is_ttf_font:
        cmap = getattr(font, "cmap", {})
        if any(ord(char) not in cmap for char in text):
            return None  # a fallback font prints it, with its own widths

        def ttf_width(char: str) -> float:
            return float(widths[ord(char)])

        return ttf_width
    if any(char not in widths for char in text):
        return None

    def core_width(char: str) -> float:
        return float(widths[char])

    return core_width


def break_lines(pdf: FPDF, text: str) -> list[str] | None:
    """The lines `multi_cell(0, h, text, align="L")` would print, found in linear time.

    fpdf2 re-measures the whole line for every character it adds, which made the letters cost
    tens of milliseconds each. This follows its rule exactly (same widths, same float arithmetic,
    same tolerance) for the case the notices use: one font that has every character of the text
    (no fallback font), no text shaping, character spacing or stretching, single spaces. For
    anything else it returns None and `multi_cell` does the work.
    """
    width = _simple_width(pdf, text)
    if width is None:
        return None
    size, k = pdf.font_size_pt, pdf.k
    max_width = pdf.w - pdf.r_margin - pdf.x
    max_width -= pdf.c_margin  # fpdf2 takes the cell margin off once for each side
    max_width -= pdf.c_margin
    lines: list[str] = []
    start, count = 0, len(text)
    while start < count:
        units = 0.0  # the line's width in font units: exact, as fpdf2 sums them
        space = -1  # index of the line's last space
        index = start
        broken = False
        while index < count:
            char = text[index]
            char_width = width(char) * size * 0.001 / k
            if (units * size * 0.001 / k + char_width) - max_width > _TOLERANCE:
                broken = True
                if char == " ":  # an overflowing space is dropped
                    lines.append(text[start:index])
                    start = index + 1
                elif space >= 0:  # back to the last space, which is dropped
                    lines.append(text[start:space])
                    start = space + 1
                else:  # one word wider than the line: cut it
                    if index == start:
                        return None  # not even one character fits; let fpdf2 raise
                    lines.append(text[start:index])
                    start = index
                break
            if char == " ":
                space = index
            units += width(char)
            index += 1
        if not broken:
            if units:
                lines.append(text[start:])
            break
    return lines or None


# The letter cut of DejaVu Sans: Latin (with Vietnamese), combining marks, Greek, Cyrillic,
# general punctuation, currency, a few letterlike symbols, arrows and bullets.
LETTER_RANGES = (
    (0x20, 0x7E),
    (0xA0, 0x24F),
    (0x300, 0x36F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x1E00, 0x1EFF),
    (0x2000, 0x206F),
    (0x20A0, 0x20BF),
    (0x2100, 0x2122),
    (0x2190, 0x2195),
    (0x2212, 0x2212),
    (0x25A0, 0x25CF),
    (0xFFFD, 0xFFFD),
)


def build_fonts(taglines: list[str]) -> dict[str, int]:
    """Rebuild the derived fonts from the packaged full ones: the letter cut of DejaVu Sans
    (both weights) and the taglines' subset of Droid Sans Fallback; returns the glyph counts.
    Run it (`fhir-adapter notices fonts`) whenever the built-in taglines change."""
    from fontTools import subset  # a dependency of fpdf2

    letter = [code for low, high in LETTER_RANGES for code in range(low, high + 1)]
    cut = {
        "DejaVuSansLetter.ttf": ("DejaVuSans.ttf", letter),
        "DejaVuSansLetter-Bold.ttf": ("DejaVuSans-Bold.ttf", letter),
    }
    covered = set(letter)
    cut["NoticeTaglines.ttf"] = (
        "DroidSansFallbackFull.ttf",
        sorted({ord(c) for text in taglines for c in text if ord(c) not in covered}),
    )
    counts = {}
    for target, (source, unicodes) in cut.items():
        options = subset.Options(
            hinting=False,
            layout_features=[],
            notdef_outline=True,
            name_IDs=["*"],
            name_languages=["*"],
            glyph_names=True,
            legacy_kern=False,
        )
        options.drop_tables += ["kern", "GPOS", "GSUB", "GDEF", "FFTM", "MATH", "hdmx", "LTSH"]
        font = subset.load_font(str(font_path(source)), options)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=unicodes)
        subsetter.subset(font)
        font.save(str(font_path(target)))
        counts[target] = len(font.getGlyphOrder())
    font_characters.cache_clear()
    return counts
