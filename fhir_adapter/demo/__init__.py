"""The demo: stand-ins for the outside world and a walk through the examples (never production).

- `directory`: a Plan-Net provider directory served from the bundled seed file (contract §1);
- `ehr`: in-memory EHR inboxes the demo directory's Endpoints point to (FHIR_ADAPTER_DEMO);
- `walkthrough`: `fhir-adapter demo`, the example requests submitted over real HTTP.

The API does not import this package at module level; the app factory mounts `directory` and
`ehr` only when the settings ask for them.
"""
