"""The provider directory adapter: an httpx client for a Plan-Net FHIR server, and the demo one."""
