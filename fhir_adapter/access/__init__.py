"""Who may do what: SMART scopes, the patient compartment and the guard services consult (pure)."""
