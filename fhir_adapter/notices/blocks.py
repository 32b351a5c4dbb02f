"""The blocks a notice's markup parses into, shared by the text, HTML and PDF forms (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BlockKind = Literal["heading", "paragraph", "strong", "bullets", "lines", "page"]


@dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)
