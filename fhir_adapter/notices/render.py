"""Render a notice as plain text (the canonical content), HTML and PDF (pure: no I/O but templates).

The wording lives in one Jinja2 template per language and kind (`templates/<lang>/<kind>.txt.j2`),
written in a small line markup that becomes the plain text and the blocks that the HTML layout
(`templates/notice.html.j2`, autoescaped) and the PDF writer lay out, so the three always say the
same thing:

    # Title            (the first line)
    ## Heading
    ! bold text        (consecutive ones form one bold paragraph: statements the law wants bold)
    %page              (the next block starts a new page)
    - bullet item      (plain lines right after an item continue it)
    | kept line        (consecutive ones keep their line breaks: address, reference numbers)
    plain lines        (consecutive ones form one paragraph; a blank line ends a block)

Every value a template prints is squeezed onto one line and marked, so a value (a member's name,
a reason) can never start a line and pose as markup.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import date
from functools import cache

import jinja2

from fhir_adapter.notices.blocks import Block, BlockKind
from fhir_adapter.notices.catalog import (
    BUILT_IN_TAGLINES,
    ENGLISH_TAGLINE,
    THRESHOLD_LANGUAGES,
    specialty_name,
)
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
from fhir_adapter.notices.pdf import BODY_PT, LARGE_PRINT_PT, to_pdf

TEXT_WIDTH = 78
_VALUE_MARK = "\ue000"  # a private-use character: never in real data, removed after parsing
_WHITESPACE = re.compile(r"\s+")


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


def render(context: NoticeContext) -> RenderedNotice:
    """The notice `context` describes, in its language, as text, HTML and PDF."""
    title, blocks = _parse(_markup(context))
    return RenderedNotice(
        title=title,
        text=_to_text(title, blocks),
        html=_to_html(title, blocks, context),
        pdf=to_pdf(title, blocks, context),
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

    def specialty(name: str) -> str:
        return specialty_name(name, language)

    catalog = BUILT_IN_TAGLINES if context.taglines is None else context.taglines
    member = context.audience == "member"
    lead = None
    if member and context.requested_language:
        primary = context.requested_language.split("-")[0]
        lead = catalog.get(context.requested_language) or catalog.get(primary) or ENGLISH_TAGLINE
    taglines = [ENGLISH_TAGLINE] if language != "en" else []
    taglines += [
        catalog[t.code] for t in THRESHOLD_LANGUAGES if t.code != language and t.code in catalog
    ]
    numbers = {"phone": context.plan.phone, "tty": context.plan.tty}
    template = _text_environment().get_template(f"{language}/{context.kind}.txt.j2")
    return template.render(
        c=context,
        plan=context.plan,
        rights=context.rights,
        hours=context.plan.hours_for(language),
        date=long_date,
        specialty=specialty,
        paragraphs=_paragraphs,
        lead_tagline=lead.format(**numbers) if lead else None,
        taglines=[t.format(**numbers) for t in taglines] if member else [],
        APPEAL_DAYS=APPEAL_DAYS,
        CONTINUING_SERVICES_DAYS=CONTINUING_SERVICES_DAYS,
        EXPEDITED_APPEAL_HOURS=EXPEDITED_APPEAL_HOURS,
        STANDARD_APPEAL_DAYS=STANDARD_APPEAL_DAYS,
        STATE_HEARING_DAYS=STATE_HEARING_DAYS,
    )


def _paragraphs(text: str) -> list[str]:
    """A text's paragraphs: the parts between blank lines."""
    return [part for part in re.split(r"\n\s*\n", text) if part.strip()]


def _parse(markup: str) -> tuple[str, tuple[Block, ...]]:
    title = ""
    blocks: list[Block] = []
    kind: BlockKind | None = None
    lines: list[str] = []

    def flush() -> None:
        nonlocal kind, lines
        if kind and lines:
            blocks.append(Block(kind, tuple(lines)))
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
            blocks.append(Block("heading", (_squeeze(line[3:]),)))
        elif line == "%page":
            flush()
            blocks.append(Block("page", ("",)))
        elif line.startswith("! "):
            start("strong")
            lines.append(_squeeze(line[2:]))
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
    return title, tuple(block for block in blocks if block.kind == "page" or any(block.lines))


# -- plain text ----------------------------------------------------------------------------------


def _to_text(title: str, blocks: tuple[Block, ...]) -> str:
    out = [title, "=" * len(title)]
    after_heading = False
    for block in blocks:
        if not after_heading:
            out.append("")  # a heading's underline runs straight into its first block
        after_heading = block.kind == "heading"
        if block.kind == "heading":
            out += [block.text, "-" * len(block.text)]
        elif block.kind in ("paragraph", "strong"):
            out.append(_wrap(block.text))
        elif block.kind == "page":
            out.append("\f")
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


def _to_html(title: str, blocks: tuple[Block, ...], context: NoticeContext) -> str:
    template = _html_environment().get_template("notice.html.j2")
    return template.render(
        title=title,
        blocks=blocks,
        language=context.language,
        body_pt=LARGE_PRINT_PT if context.large_print else BODY_PT,
    )
