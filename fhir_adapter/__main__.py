"""`python -m fhir_adapter` runs the CLI."""

from fhir_adapter.cli import main

main()
