"""The operator's own machinery, free of kopf: typed configuration (and, later, work queue and state)."""
