"""Delivery adapters: posting FHIR Bundles to recipients' endpoints over HTTP."""
