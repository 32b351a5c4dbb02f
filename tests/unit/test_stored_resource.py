"""A StoredResource read from the store keeps its stored JSON and decodes it once, when asked
(issue #18); it stays immutable and never prints its content."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_adapter.api.fhir_http import stored_body
from fhir_adapter.ports.store import StoredResource

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
STORED = '{"resourceType":"Patient","id":"p1","name":[{"family":"Garcia"}]}'


def test_stored_json_is_decoded_once_when_the_content_is_asked_for() -> None:
    read = StoredResource("Patient", "p1", 1, AT, json=STORED)
    content = read.content
    assert content == {"resourceType": "Patient", "id": "p1", "name": [{"family": "Garcia"}]}
    assert read.content is content  # decoded once
    assert read == StoredResource("Patient", "p1", 1, AT, content)  # as if read decoded


def test_an_answer_splices_the_stored_json_and_content_shown_otherwise_is_encoded() -> None:
    import orjson

    read = StoredResource("Patient", "p1", 1, AT, json=STORED)
    assert orjson.dumps({"resource": stored_body(read)}) == b'{"resource":' + STORED.encode() + b"}"
    shown = read.with_content({"resourceType": "Patient", "id": "p1"})
    assert shown.json is None  # what is shown differs from what is stored: no splice
    assert orjson.dumps(stored_body(shown)) == b'{"resourceType":"Patient","id":"p1"}'
    assert (shown.key, shown.version_id, shown.last_updated) == ("Patient/p1", 1, AT)


def test_it_holds_one_of_content_or_json_and_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        StoredResource("Patient", "p1", 1, AT)
    with pytest.raises(TypeError):
        StoredResource("Patient", "p1", 1, AT, {"id": "p1"}, json=STORED)
    read = StoredResource("Patient", "p1", 1, AT, json=STORED)
    with pytest.raises(AttributeError):
        read.version_id = 2  # type: ignore[misc]


def test_its_repr_names_the_version_never_the_content() -> None:
    read = StoredResource("Patient", "p1", 1, AT, json=STORED)
    read.content  # noqa: B018
    assert "Garcia" not in repr(read) and "Patient/p1" not in repr(read)
    assert repr(read).startswith("StoredResource('Patient', 'p1', 1,")
