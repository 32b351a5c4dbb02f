"""One router per part of the FHIR REST surface."""
