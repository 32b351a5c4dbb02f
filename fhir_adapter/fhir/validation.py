"""Parse and structurally validate FHIR JSON; every problem becomes an Issue naming its element."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
import pydantic

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.outcome import Issue
from fhir_adapter.fhir.references import spelled
from fhir_adapter.fhir.resources import is_known_type, model_class

# Required bindings fhir.resources does not enforce: codes whose wrong value changes meaning.
_REQUEST_STATUS = {
    "draft",
    "active",
    "on-hold",
    "revoked",
    "completed",
    "entered-in-error",
    "unknown",
}
_REQUEST_INTENT = {
    "proposal", "plan", "directive", "order", "original-order", "reflex-order",
    "filler-order", "instance-order", "option",
}  # fmt: skip
_PRIORITY = {"routine", "urgent", "asap", "stat"}
_FM_STATUS = {"active", "cancelled", "draft", "entered-in-error"}
_CLAIM_USE = {"claim", "preauthorization", "predetermination"}
_TASK_STATUS = {
    "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
    "in-progress", "on-hold", "failed", "completed", "entered-in-error",
}  # fmt: skip
_TASK_INTENT = {
    "unknown", "proposal", "plan", "order", "original-order", "reflex-order",
    "filler-order", "instance-order", "option",
}  # fmt: skip
_EVENT_STATUS = {
    "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
    "entered-in-error", "unknown",
}  # fmt: skip

REQUIRED_CODES: dict[str, dict[str, set[str]]] = {
    "Task": {"status": _TASK_STATUS, "intent": _TASK_INTENT, "priority": _PRIORITY},
    "ServiceRequest": {"status": _REQUEST_STATUS, "intent": _REQUEST_INTENT, "priority": _PRIORITY},
    "Claim": {"status": _FM_STATUS, "use": _CLAIM_USE},
    "ClaimResponse": {
        "status": _FM_STATUS,
        "use": _CLAIM_USE,
        "outcome": {"queued", "complete", "error", "partial"},
    },
    "Coverage": {"status": _FM_STATUS},
    "Communication": {"status": _EVENT_STATUS, "priority": _PRIORITY},
    "DiagnosticReport": {
        "status": {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    },
    "DocumentReference": {"status": {"current", "superseded", "entered-in-error"}},
    "Patient": {"gender": {"male", "female", "other", "unknown"}},
    "Practitioner": {"gender": {"male", "female", "other", "unknown"}},
    "Subscription": {"status": {"requested", "active", "error", "off"}},
    "Bundle": {
        "type": {
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        }
    },
}
_HTTP_VERBS = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}
_CLEAN_MESSAGE = re.compile(r"^(Value error|Assertion failed), ")


def parse_json(raw: bytes, *, max_depth: int) -> Any:
    """Decode a request body; malformed or too deeply nested JSON is a 400."""
    if not raw.strip():
        raise InvalidRequestError("The request body is empty; a FHIR JSON resource was expected")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc).lower():
            raise InvalidRequestError(
                f"JSON nesting is deeper than the limit of {max_depth} levels"
            ) from exc
        raise InvalidRequestError(f"The body is not valid JSON: {exc}") from exc
    depth = json_depth(data, stop_after=max_depth)
    if depth > max_depth:
        raise InvalidRequestError(f"JSON nesting is deeper than the limit of {max_depth} levels")
    return data


def json_depth(data: Any, *, stop_after: int) -> int:
    """Nesting depth of a decoded JSON value, counted level by level without recursion; stops
    early past a limit."""
    depth, level = 1, [data]
    while True:
        below: list[Any] = []
        for value in level:
            if isinstance(value, dict):
                below += [v for v in value.values() if isinstance(v, _CONTAINERS)]
            elif isinstance(value, list):
                below += [v for v in value if isinstance(v, _CONTAINERS)]
        if not below:
            return depth
        depth += 1
        if depth > stop_after:
            return depth
        level = below


_CONTAINERS = (dict, list)


def require_resource(data: Any, *, path: str = "") -> str:
    """Check `data` is a JSON object naming a known resourceType; return the type."""
    where = path or "resource"
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where} must be a JSON object", expression=path or None)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidRequestError(
            f"{where} has no resourceType",
            expression=f"{path}.resourceType" if path else "resourceType",
        )
    if not is_known_type(resource_type):
        raise InvalidRequestError(
            f"'{resource_type}' is not a FHIR R4 resource type",
            expression=f"{path}.resourceType" if path else "resourceType",
        )
    return resource_type


def validate_resource(data: Any, *, path: str = "") -> str:
    """Validate `data` against the FHIR R4 structure; raise a 400 listing every issue.

    `path` is the FHIRPath of `data` inside the request (e.g. `Bundle.entry[2].resource`); issue
    expressions are rooted there, or at the resource type when `data` is the whole body.
    """
    resource_type = require_resource(data, path=path)
    root = path or resource_type
    issues = list(_raw_json_issues(data, root))
    if issues:  # embedded resources of no known type cannot even be given to the models
        raise InvalidRequestError(issues=_dedupe(issues))
    cls = model_class(resource_type)
    try:
        cls.model_validate(data)
    except pydantic.ValidationError as exc:
        issues.extend(_issue_from_pydantic(error, root) for error in exc.errors())
    # The models' own failures on odd input: e.g. a number where a `url` is expected raises
    # AttributeError inside fhir_core's Url validator instead of a ValidationError.
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        issues.append(
            Issue("structure", f"{root}: not a valid {resource_type} ({type(exc).__name__})", root)
        )
    issues.extend(_json_type_issues(data, cls, root))
    issues.extend(_code_issues(data, root))
    if issues:
        raise InvalidRequestError(issues=_dedupe(issues))
    return resource_type


# FHIR R4 strings: no characters below U+0020 other than tab, CR and LF (datatypes.html#string).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _raw_json_issues(data: Any, root: str) -> Iterator[Issue]:
    """Control characters anywhere, empty arrays, and embedded resources (contained,
    Bundle.entry.resource, Parameters.parameter.resource) without a resourceType FHIR knows.
    Paths are linked (see `spelled`) and spelled out only for an issue."""
    stack: list[tuple[Any, Any, bool]] = [(root, data, False)]
    while stack:
        where, node, embedded = stack.pop()
        if embedded:
            kind = node.get("resourceType") if isinstance(node, dict) else None
            if not isinstance(kind, str) or not is_known_type(kind):
                shown = kind if isinstance(kind, str) else "(missing)"
                at = spelled(where)
                yield Issue(
                    "structure",
                    f"{at}.resourceType '{shown}' is not a FHIR R4 resource type",
                    f"{at}.resourceType",
                )
                continue
        if isinstance(node, dict):
            for key, child in node.items():
                if CONTROL_CHARACTERS.search(key):
                    at = spelled(where)
                    yield Issue("structure", f"{at}: an element name holds a control character", at)
                    continue
                if key == "contained" and isinstance(child, list):
                    stack.extend((((where, key), i), c, True) for i, c in enumerate(child))
                else:
                    stack.append(
                        ((where, key), child, key == "resource" and isinstance(child, dict))
                    )
        elif isinstance(node, list):
            if not node:  # R4 json.html: an element is left out, never sent as []
                at = spelled(where)
                yield Issue("structure", f"{at}: an array may not be empty", at)
            stack.extend(((where, i), c, False) for i, c in enumerate(node))
        elif isinstance(node, str) and CONTROL_CHARACTERS.search(node):
            at = spelled(where)
            yield Issue("structure", f"{at}: strings may not hold control characters", at)


_OTHER: tuple[str, type | None] = ("other", None)


@cache
def _field_kinds(cls: type) -> dict[str, tuple[str, type | None]]:
    """For each JSON name of a model: 'bool', 'int', 'decimal', 'model' (with its class) or 'other'."""
    kinds: dict[str, tuple[str, type | None]] = {}
    for name, info in getattr(cls, "model_fields", {}).items():
        kinds[info.alias or name] = _kind(info.annotation)
    return kinds


def _kind(annotation: Any) -> tuple[str, type | None]:
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (typing.Union, types.UnionType, list, typing.Annotated) and args:
            annotation = args[0]
            continue
        break
    if annotation is bool:
        return "bool", None
    if annotation is int:
        return "int", None
    if annotation in (Decimal, float):
        return "decimal", None
    if hasattr(annotation, "get_model_klass"):
        return "model", annotation.get_model_klass()
    return "other", None


def _json_type_issues(data: dict[str, Any], cls: type, root: Any) -> Iterator[Issue]:
    """JSON booleans, numbers and objects where FHIR wants them: the models would coerce "yes",
    "3" or the string "{}". `root`: a path as `spelled` takes it (spelled out for an issue only)."""
    kinds = _field_kinds(cls)
    for key, value in data.items():
        kind, klass = kinds.get(key, _OTHER)
        if kind == "other":
            continue
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            if item is None:
                continue
            where = ((root, key), index) if isinstance(value, list) else (root, key)
            if kind == "bool" and not isinstance(item, bool):
                at = spelled(where)
                yield Issue("structure", f"{at} must be a JSON boolean (true or false)", at)
            elif kind == "int" and (isinstance(item, bool) or not isinstance(item, int)):
                at = spelled(where)
                yield Issue("structure", f"{at} must be a JSON integer", at)
            elif kind == "decimal" and (
                isinstance(item, bool) or not isinstance(item, int | float)
            ):
                at = spelled(where)
                yield Issue("structure", f"{at} must be a JSON number", at)
            elif kind == "model" and not isinstance(item, dict):
                # The models would parse a JSON *string* holding an object ("{}") as one.
                at = spelled(where)
                yield Issue("structure", f"{at} must be a JSON object", at)
            elif kind == "model":
                target = klass
                if isinstance(item.get("resourceType"), str) and is_known_type(
                    item["resourceType"]
                ):
                    target = model_class(item["resourceType"])
                if target is not None:
                    yield from _json_type_issues(item, target, where)


def _issue_from_pydantic(error: Any, root: str) -> Issue:
    expression = _fhirpath(root, error.get("loc", ()))
    kind = str(error.get("type", ""))
    if kind == "extra_forbidden":
        element = expression.rsplit(".", 1)[-1]
        return Issue("structure", f"Unknown element '{element}' at {expression}", expression)
    if kind.endswith("missing"):
        return Issue("required", f"Required element {expression} is missing", expression)
    message = _CLEAN_MESSAGE.sub("", str(error.get("msg", "invalid value"))).strip()
    message = " ".join(message.split())
    return Issue("structure", f"{expression}: {message}", expression)


def _fhirpath(root: str, loc: tuple[Any, ...]) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif isinstance(part, str) and re.fullmatch(r"_?[A-Za-z][A-Za-z0-9_]*", part):
            path += "." + (("_" + part[:-5]) if part.endswith("__ext") else part)
    return path


def _code_issues(data: dict[str, Any], root: str) -> Iterator[Issue]:
    for element, allowed in REQUIRED_CODES.get(data["resourceType"], {}).items():
        value = data.get(element)
        if isinstance(value, str) and value not in allowed:
            yield Issue(
                "code-invalid",
                f"'{value}' is not a valid code for {root}.{element} "
                f"(allowed: {', '.join(sorted(allowed))})",
                f"{root}.{element}",
            )
    entries = data.get("entry") if data["resourceType"] == "Bundle" else None
    if isinstance(entries, list):  # not a list (`"entry": 3`): the models already said so
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            request = entry.get("request")
            method = request.get("method") if isinstance(request, dict) else None
            if isinstance(method, str) and method not in _HTTP_VERBS:
                yield Issue(
                    "code-invalid",
                    f"'{method}' is not an HTTP verb FHIR allows",
                    f"{root}.entry[{index}].request.method",
                )
            resource = entry.get("resource")
            if isinstance(resource, dict) and is_known_type(str(resource.get("resourceType"))):
                yield from _code_issues(resource, f"{root}.entry[{index}].resource")


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str | None, str]] = set()
    unique = []
    for issue in issues:
        key = (issue.expression, issue.diagnostics)
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    return unique
