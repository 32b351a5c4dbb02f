"""Find, parse and rewrite the references inside a resource (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

_ID = r"[A-Za-z0-9\-.]{1,64}"
_RELATIVE = re.compile(
    rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?$"
)
_ABSOLUTE = re.compile(
    rf"^(?P<base>https?://.+?)/(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?$"
)
ID_PATTERN = re.compile(rf"^{_ID}$")

ReferenceKind = Literal["local", "absolute", "urn", "contained", "conditional", "other"]


@dataclass(frozen=True, slots=True)
class ParsedReference:
    """What a Reference.reference string points at."""

    kind: ReferenceKind
    raw: str
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None

    @property
    def local_key(self) -> str | None:
        """`Type/id` for a reference to this server, else None."""
        if self.kind == "local" and self.resource_type and self.id:
            return f"{self.resource_type}/{self.id}"
        return None


@lru_cache(maxsize=8192)
def parse_reference(reference: str, *, base_url: str | None = None) -> ParsedReference:
    """Classify `reference`; an absolute URL under our own `base_url` counts as local.

    Cached: a submission parses the same few references many times (checks, index rows, facts),
    and the answer is an immutable value of the string alone."""
    if reference.startswith("#"):
        return ParsedReference("contained", reference)
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return ParsedReference("urn", reference)
    if base_url and reference.startswith(base_url.rstrip("/") + "/"):
        reference = reference[len(base_url.rstrip("/")) + 1 :]
    if match := _RELATIVE.match(reference):
        return ParsedReference("local", reference, match["type"], match["id"], match["version"])
    if match := _ABSOLUTE.match(reference):
        return ParsedReference("absolute", reference, match["type"], match["id"], match["version"])
    if re.match(r"^[A-Z][A-Za-z]+\?", reference):
        return ParsedReference("conditional", reference, reference.split("?", 1)[0])
    return ParsedReference("other", reference)


def iter_references(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(fhirpath, Reference object)` for every Reference with a `reference` string in `value`.

    Contained resources are walked too; their own internal references are reported like any other.
    A node's path is kept as links to its parent's and spelled out only for a Reference: most
    nodes hold none, and formatting each one's path was most of this walk's time.
    """
    stack: list[tuple[Any, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                yield spelled(where), node
            for key, child in node.items():
                if isinstance(child, _CONTAINERS):
                    stack.append(((where, key), child))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if isinstance(child, _CONTAINERS):
                    stack.append(((where, index), child))


_CONTAINERS = (dict, list)


def spelled(where: Any) -> str:
    """The FHIRPath of a linked path: a root string, or `(parent, key or index)`."""
    parts: list[str] = []
    while isinstance(where, tuple):
        where, step = where
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    parts.append(where)
    return "".join(reversed(parts))


def rewrite_references(value: Any, mapping: Mapping[str, str]) -> Any:
    """Return a copy of `value` with every string equal to a key of `mapping` replaced.

    Used for transaction `urn:uuid` fullUrls, which the spec says are rewritten wherever they appear
    (references, uri elements, narrative links); those strings are unique by construction.
    """
    if isinstance(value, dict):
        return {k: rewrite_references(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_references(v, mapping) for v in value]
    if isinstance(value, str):
        return rewrite_string(value, mapping)
    return value


def rewrite_string(value: str, mapping: Mapping[str, str]) -> str:
    """`rewrite_references` for one string: the whole string, or the quoted links of a narrative."""
    if value in mapping:
        return mapping[value]
    if value.startswith("<div") and any(key in value for key in mapping):
        for key, replacement in mapping.items():
            value = value.replace(f'"{key}"', f'"{replacement}"')
    return value


def contained_ids(resource: Mapping[str, Any]) -> set[str]:
    """The `#id` anchors a resource's contained resources define."""
    return {
        f"#{c['id']}"
        for c in resource.get("contained") or []
        if isinstance(c, dict) and c.get("id")
    }
