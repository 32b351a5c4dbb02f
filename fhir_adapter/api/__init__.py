"""The FastAPI adapter: thin routes over the services; every answer is FHIR JSON."""
