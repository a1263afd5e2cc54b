"""kopf handlers: thin glue between Kubernetes events, the planners and the apply layer.

Importing this package registers every handler with kopf's default registry.
"""

from inferfleet.handlers import autoscaler, indexes, inferenceservice, lifecycle

__all__ = ["autoscaler", "indexes", "inferenceservice", "lifecycle"]
