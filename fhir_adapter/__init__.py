"""fhir-adapter: a FHIR R4 adapter for a Medi-Cal plan's Second Medical Opinion policy."""

__version__ = "0.1.0"
