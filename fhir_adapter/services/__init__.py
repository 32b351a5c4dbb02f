"""Use cases: the FHIR interactions and, later, the second-opinion workflow. Ports in, no frameworks."""
