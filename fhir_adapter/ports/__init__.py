"""The ports the services depend on, one module per concern; the adapters implement them.

- `ports.store`: the resource database — value types and a transaction made of narrow parts
  (`tx.resources`, `tx.jobs`, `tx.outbox`, `tx.events`, `tx.auth`).
- `ports.directory`: the provider directory.
- `ports.delivery`: sending Bundles and notifications to other systems.
- `ports.hooks`: what a workflow adds to plain FHIR writes.

Import from the module that defines a name; this package re-exports nothing.
"""
