"""The second-opinion workflow, one module per use case: intake (the write hooks), evaluation
(gathering the facts, deciding), the recorder every decision goes through, reviewer decisions,
cancellation, consultation reports, and the background jobs. `service` assembles them."""
