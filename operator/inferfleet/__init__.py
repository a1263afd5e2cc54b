"""inferfleet: a Kubernetes operator for fleets of LLM inference servers on GPUs."""

__version__ = "0.1.0.dev0"
