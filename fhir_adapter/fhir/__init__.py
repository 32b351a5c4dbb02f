"""The pure FHIR core: parsing, validation, references, search parameters, Bundles. No I/O."""
