"""Authentication adapters: access-token verification, the built-in SMART Backend Services
authorization server, and per-client rate limits. What a token allows lives in `access/`."""
