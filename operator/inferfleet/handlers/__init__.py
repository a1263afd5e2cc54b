"""kopf handlers: thin glue between Kubernetes events, the planners and the apply layer.

Importing this package registers every handler with kopf's default registry.
"""

from inferfleet.handlers import indexes, inferenceservice, lifecycle

__all__ = ["indexes", "inferenceservice", "lifecycle"]
