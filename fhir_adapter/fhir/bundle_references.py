"""R4 "Resolving references in Bundles" (bundle.html#references), once, for every Bundle we take in:
transactions, batches and PAS request collections alike (pure).

- an absolute reference (http(s), `urn:uuid:`, `urn:oid:`) resolves to the entry whose fullUrl is it;
- a relative reference `Type/id` resolves against the base of the fullUrl of the entry that holds
  it (a `urn:` fullUrl: against this server's base), and then like an absolute one;
- a versioned reference (`…/_history/n`) resolves like the unversioned one;
- `#id` references resolve inside the holding resource and are left to its own checks.

A reference that two entries answer is ambiguous; a `urn:` reference nothing answers cannot be
anybody's: both are 422s naming the entry and the element. Other references nothing in the Bundle
answers point outside it (this server, or another) and are left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import iter_references, rewrite_string

_HISTORY = re.compile(r"/_history/[^/]+$")
_RESTFUL = re.compile(
    r"^(?P<base>https?://.+?)/(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$"
)
_RELATIVE = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)


@dataclass(frozen=True, slots=True)
class BundleReferences:
    """Where each reference written in a Bundle's entries leads: `(entry index, reference as
    written) -> index of the entry it resolves to`, plus what could not be resolved."""

    targets: dict[tuple[int, str], int] = field(default_factory=dict)
    issues: tuple[Issue, ...] = ()

    def target(self, entry_index: int, reference: str) -> int | None:
        return self.targets.get((entry_index, reference))


def fullurl_base(full_url: str | None) -> str | None:
    """The server base of a RESTful fullUrl (`{base}/{Type}/{id}`), else None."""
    match = _RESTFUL.match(_HISTORY.sub("", full_url or ""))
    return match["base"] if match else None


def resolve_bundle_references(
    entries: Sequence[tuple[str | None, Mapping[str, Any] | None]],
    *,
    server_base: str,
    path: str = "Bundle.entry",
) -> BundleReferences:
    """Resolve every reference in `entries` (`(fullUrl, resource)` in Bundle order)."""
    by_url: dict[str, list[int]] = {}
    for index, (full_url, _) in enumerate(entries):
        if full_url:
            by_url.setdefault(_HISTORY.sub("", full_url), []).append(index)
    targets: dict[tuple[int, str], int] = {}
    issues: list[Issue] = []
    for index, (full_url, resource) in enumerate(entries):
        if not isinstance(resource, Mapping):
            continue
        holder_base = fullurl_base(full_url) or server_base.rstrip("/")
        for where, ref_object in iter_references(resource, f"{path}[{index}].resource"):
            raw = ref_object["reference"]
            wanted = candidate_url(raw, holder_base)
            if wanted is None:
                continue
            found = by_url.get(wanted, [])
            expression = f"{where}.reference"
            if len(found) > 1:
                listed = ", ".join(f"{path}[{i}]" for i in found)
                issues.append(
                    Issue(
                        "processing",
                        f"{expression} '{raw}' is ambiguous: entries {listed} share the fullUrl "
                        f"'{wanted}'",
                        expression,
                    )
                )
            elif found:
                targets[(index, raw)] = found[0]
            elif raw.startswith(("urn:uuid:", "urn:oid:")):
                issues.append(
                    Issue(
                        "processing",
                        f"{expression} '{raw}' matches no fullUrl in the Bundle",
                        expression,
                    )
                )
    return BundleReferences(targets, tuple(issues))


def candidate_url(reference: str, holder_base: str) -> str | None:
    """The fullUrl `reference` would have, written in an entry whose base is `holder_base`; None
    for references the Bundle's entries never answer (`#contained`, conditional, malformed)."""
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return reference
    if reference.startswith(("http://", "https://")):
        return _HISTORY.sub("", reference)
    if _RELATIVE.match(reference):
        return f"{holder_base}/{_HISTORY.sub('', reference)}"
    return None


def duplicate_fullurl_issues(
    full_urls: Sequence[str | None], *, path: str = "Bundle.entry"
) -> list[Issue]:
    """Two entries with one fullUrl make every reference to it ambiguous (R4 bundle invariant
    bdl-7 allows it only for versions of one resource, which a submission never is)."""
    first: dict[str, int] = {}
    issues: list[Issue] = []
    for index, full_url in enumerate(full_urls):
        if not full_url:
            continue
        if full_url in first:
            where = f"{path}[{index}].fullUrl"
            issues.append(
                Issue(
                    "processing",
                    f"{where} '{full_url}' repeats {path}[{first[full_url]}].fullUrl; references "
                    "to it would be ambiguous",
                    where,
                )
            )
        first.setdefault(full_url, index)
    return issues


def rewrite_entry_references(
    resource: Any,
    entry_index: int,
    resolved: BundleReferences,
    keys: Mapping[int, str],
    mapping: Mapping[str, str] | None = None,
) -> Any:
    """A copy of `resource` (entry `entry_index`) whose references that resolve to an entry in
    `keys` (entry index -> `Type/id` it is stored as) name that key instead; with `mapping`, in
    the same walk, what `rewrite_references(copy, mapping)` would then do to every string."""
    if isinstance(resource, dict):
        copy = {
            k: rewrite_entry_references(v, entry_index, resolved, keys, mapping)
            for k, v in resource.items()
        }
        raw = resource.get("reference")
        if isinstance(raw, str):
            target = resolved.target(entry_index, raw)
            if target is not None and target in keys:
                copy["reference"] = (
                    rewrite_string(keys[target], mapping) if mapping else keys[target]
                )
        return copy
    if isinstance(resource, list):
        return [rewrite_entry_references(v, entry_index, resolved, keys, mapping) for v in resource]
    if mapping and isinstance(resource, str):
        return rewrite_string(resource, mapping)
    return resource
