"""Render a notice as plain text (the canonical content), HTML and PDF (pure: no I/O but templates).

The wording lives in one Jinja2 template per language and kind (`templates/<lang>/<kind>.txt.j2`),
written in a small line markup that becomes the plain text and the blocks that the HTML layout
(`templates/notice.html.j2`, autoescaped) and the PDF writer lay out, so the three always say the
same thing:

    # Title            (the first line)
    ## Heading
    - bullet item      (plain lines right after an item continue it)
    | kept line        (consecutive ones keep their line breaks: address, reference numbers)
    plain lines        (consecutive ones form one paragraph; a blank line ends a block)

Every value a template prints is squeezed onto one line and marked, so a value (a member's name,
a reason) can never start a line and pose as markup.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Literal

import jinja2
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from fhir_adapter.notices.formatting import format_date
from fhir_adapter.notices.model import (
    APPEAL_DAYS,
    CONTINUING_SERVICES_DAYS,
    EXPEDITED_APPEAL_HOURS,
    STANDARD_APPEAL_DAYS,
    STATE_HEARING_DAYS,
    Language,
    NoticeContext,
)

TEXT_WIDTH = 78
_VALUE_MARK = "\ue000"  # a private-use character: never in real data, removed after parsing
_WHITESPACE = re.compile(r"\s+")

BlockKind = Literal["heading", "paragraph", "bullets", "lines"]


@dataclass(frozen=True, slots=True)
class RenderedNotice:
    """One notice in its three forms; `text` is the canonical content."""

    title: str
    text: str
    html: str
    pdf: bytes
    language: Language

    @property
    def media_type_text(self) -> str:
        return "text/plain; charset=utf-8"

    @property
    def media_type_html(self) -> str:
        return "text/html; charset=utf-8"

    @property
    def media_type_pdf(self) -> str:
        return "application/pdf"


@dataclass(frozen=True, slots=True)
class _Block:
    kind: BlockKind
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def render(context: NoticeContext) -> RenderedNotice:
    """The notice `context` describes, in its language, as text, HTML and PDF."""
    title, blocks = _parse(_markup(context))
    return RenderedNotice(
        title=title,
        text=_to_text(title, blocks),
        html=_to_html(title, blocks, context.language),
        pdf=_to_pdf(title, blocks, context),
        language=context.language,
    )


# -- the wording ---------------------------------------------------------------------------------


def _finalize(value: object) -> str:
    if value is None:
        raise TypeError("a notice template printed None; guard optional values in the template")
    return _VALUE_MARK + _squeeze(str(value))


def _squeeze(text: str) -> str:
    return _WHITESPACE.sub(" ", text.replace(_VALUE_MARK, "")).strip()


@cache
def _text_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fhir_adapter.notices", "templates"),
        autoescape=False,  # plain text: HTML escaping happens in the HTML layout
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,  # an included partial ends its last line
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _html_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fhir_adapter.notices", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _markup(context: NoticeContext) -> str:
    language = context.language

    def long_date(value: date) -> str:
        return format_date(value, language)

    template = _text_environment().get_template(f"{language}/{context.kind}.txt.j2")
    return template.render(
        c=context,
        plan=context.plan,
        hours=context.plan.hours_for(language),
        date=long_date,
        APPEAL_DAYS=APPEAL_DAYS,
        CONTINUING_SERVICES_DAYS=CONTINUING_SERVICES_DAYS,
        EXPEDITED_APPEAL_HOURS=EXPEDITED_APPEAL_HOURS,
        STANDARD_APPEAL_DAYS=STANDARD_APPEAL_DAYS,
        STATE_HEARING_DAYS=STATE_HEARING_DAYS,
    )


def _parse(markup: str) -> tuple[str, tuple[_Block, ...]]:
    title = ""
    blocks: list[_Block] = []
    kind: BlockKind | None = None
    lines: list[str] = []

    def flush() -> None:
        nonlocal kind, lines
        if kind and lines:
            blocks.append(_Block(kind, tuple(lines)))
        kind, lines = None, []

    def start(new_kind: BlockKind) -> None:
        nonlocal kind
        if kind != new_kind:
            flush()
            kind = new_kind

    for raw in markup.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("# "):
            flush()
            title = _squeeze(line[2:])
        elif line.startswith("## "):
            flush()
            blocks.append(_Block("heading", (_squeeze(line[3:]),)))
        elif line.startswith("- "):
            start("bullets")
            lines.append(_squeeze(line[2:]))
        elif line.startswith("| "):
            start("lines")
            lines.append(_squeeze(line[2:]))
        elif kind == "bullets":
            lines[-1] = f"{lines[-1]} {_squeeze(line)}"
        else:
            start("paragraph")
            lines.append(_squeeze(line))
    flush()
    if not title:
        raise ValueError("a notice template must start with a '# ' title line")
    return title, tuple(block for block in blocks if any(block.lines))


# -- plain text ----------------------------------------------------------------------------------


def _to_text(title: str, blocks: tuple[_Block, ...]) -> str:
    out = [title, "=" * len(title)]
    after_heading = False
    for block in blocks:
        if not after_heading:
            out.append("")  # a heading's underline runs straight into its first block
        after_heading = block.kind == "heading"
        if block.kind == "heading":
            out += [block.text, "-" * len(block.text)]
        elif block.kind == "paragraph":
            out.append(_wrap(block.text))
        elif block.kind == "bullets":
            out += [_wrap(item, first="- ", rest="  ") for item in block.lines]
        else:
            out += list(block.lines)
    return "\n".join(out) + "\n"


def _wrap(text: str, *, first: str = "", rest: str = "") -> str:
    return textwrap.fill(
        text,
        width=TEXT_WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


# -- HTML ----------------------------------------------------------------------------------------


def _to_html(title: str, blocks: tuple[_Block, ...], language: Language) -> str:
    template = _html_environment().get_template("notice.html.j2")
    return template.render(title=title, blocks=blocks, language=language)


# -- PDF -----------------------------------------------------------------------------------------

_PDF_FONT = "Helvetica"
_PDF_REPLACEMENTS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2022": "-",
    "\u2026": "...",
    "\u00a0": " ",
}
_PAGE_LABEL: dict[Language, str] = {
    "en": "Page {page} of {pages}",
    "es": "Página {page} de {pages}",
}


def pdf_safe(text: str) -> str:
    """`text` as the PDF's built-in Latin-1 fonts can print it: letters outside Latin-1 lose
    their accents (`Nguyễn` → `Nguyen`), and what has no Latin-1 form becomes `?`.

    The text and HTML forms keep every character; only the PDF form needs this.
    """
    if text.isascii():  # nearly every line of a notice: nothing to replace
        return text
    out: list[str] = []
    for char in text:
        char = _PDF_REPLACEMENTS.get(char, char)
        if _is_latin1(char):
            out.append(char)
            continue
        base = "".join(
            part for part in unicodedata.normalize("NFKD", char) if not unicodedata.combining(part)
        )
        out.append(base if base and _is_latin1(base) else "?")
    return "".join(out)


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class _NoticePdf(FPDF):
    def __init__(self, page_label: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="letter")
        self._page_label = page_label

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(_PDF_FONT, size=8)
        label = self._page_label.format(page=self.page_no(), pages="{nb}")
        self.cell(0, 10, pdf_safe(label), align="C")


def _to_pdf(title: str, blocks: tuple[_Block, ...], context: NoticeContext) -> bytes:
    pdf = _NoticePdf(_PAGE_LABEL[context.language])
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    # Fixed metadata: the same notice always gives the same bytes.
    pdf.set_creation_date(datetime.combine(context.notice_date, datetime.min.time(), tzinfo=UTC))
    pdf.set_title(pdf_safe(title))
    pdf.set_author(pdf_safe(context.plan.name))
    pdf.set_lang(context.language)
    pdf.add_page()

    pdf.set_font(_PDF_FONT, style="B", size=15)
    _write(pdf, 7, title)
    for block in blocks:
        pdf.ln(3)
        if block.kind == "heading":
            if pdf.get_y() > pdf.page_break_trigger - 30:
                pdf.add_page()  # keep a heading with the text under it
            else:
                pdf.ln(1)
            pdf.set_font(_PDF_FONT, style="B", size=12)
            _write(pdf, 6, block.text)
            continue
        pdf.set_font(_PDF_FONT, size=10.5)
        if block.kind == "paragraph":
            _write(pdf, 5, block.text)
        elif block.kind == "bullets":
            for item in block.lines:
                pdf.cell(5, 5, "-")
                _write(pdf, 5, item)
                pdf.ln(1)
        else:
            for line in block.lines:
                _write(pdf, 5, line)
    return bytes(pdf.output())


def _write(pdf: FPDF, height: float, text: str) -> None:
    """Left-aligned (ragged right reads more easily), wrapped, then back to the left margin."""
    text = pdf_safe(text)
    lines = _break_lines(pdf, text)
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


def _break_lines(pdf: FPDF, text: str) -> list[str] | None:
    """The lines `multi_cell(0, h, text, align="L")` would print, found in linear time.

    fpdf2 re-measures the whole line for every character it adds, which made the letters cost
    tens of milliseconds each. This follows its rule exactly (same widths, same float arithmetic,
    same tolerance) for the one case the notices use: one core font, no character spacing or
    stretching, single spaces. For anything else it returns None and `multi_cell` does the work.
    """
    font = pdf.current_font
    widths = getattr(font, "cw", None)
    if (
        not text
        or pdf.is_ttf_font
        or not isinstance(widths, dict)
        or pdf.char_spacing
        or pdf.font_stretching != 100
        or any(char in _SPECIAL or char not in widths for char in text)
    ):
        return None
    size, k = pdf.font_size_pt, pdf.k
    max_width = pdf.w - pdf.r_margin - pdf.x
    max_width -= pdf.c_margin  # fpdf2 takes the cell margin off once for each side
    max_width -= pdf.c_margin
    lines: list[str] = []
    start, count = 0, len(text)
    while start < count:
        units = 0  # the line's width in font units: exact, as fpdf2 sums them
        space = -1  # index of the line's last space
        index = start
        broken = False
        while index < count:
            char = text[index]
            char_width = widths[char] * size * 0.001 / k
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
            units += widths[char]
            index += 1
        if not broken:
            if units:
                lines.append(text[start:])
            break
    return lines or None
