"""The second-opinion workflow core (pure): codes, the Task state machine, decision deadlines."""
