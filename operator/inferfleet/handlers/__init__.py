"""kopf handlers: thin glue between Kubernetes events, the planners and the apply layer.

Importing this package registers every handler with kopf's default registry.
"""

# lifecycle first: kopf runs startup handlers in registration order, and the others use its client.
from inferfleet.handlers import lifecycle

# isort: split
from inferfleet.handlers import autoscaler, indexes, watches

__all__ = ["autoscaler", "indexes", "lifecycle", "watches"]
