"""The model registry fhir_core resolves embedded resources through (issue #13)."""

from __future__ import annotations

import importlib

import pytest
from fhir_core.constraints import FHIR_TYPES_MAPS

from fhir_adapter.errors import InvalidRequestError
from fhir_adapter.fhir.resources import SERVED_TYPES, model_class
from fhir_adapter.fhir.validation import validate_resource


def test_every_registered_model_is_named_module_colon_class() -> None:
    """`module.Class` would make pydantic's import_string fail an import before each lookup."""
    model_class("Bundle")
    dotted = [path for path in FHIR_TYPES_MAPS.values() if ":" not in path]
    assert dotted == []


def test_the_colon_names_resolve_to_the_served_models() -> None:
    for resource_type in SERVED_TYPES:
        path = FHIR_TYPES_MAPS[f"R4.{resource_type}Type"]
        module, _, name = path.partition(":")
        assert getattr(importlib.import_module(module), name) is model_class(resource_type)


def test_a_bundle_still_validates_its_embedded_resources_by_their_own_models() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "nickname": "Bo"}}],
    }
    with pytest.raises(InvalidRequestError) as raised:
        validate_resource(bundle)
    assert [i.expression for i in raised.value.issues] == ["Bundle.entry[0].resource.nickname"]
