"""Hard bounds of the InferenceService API: the CRD refuses anything beyond them.

They keep one tenant's spec from costing the operator or the API server unbounded memory or work
(a per-installation limit, lower, is the operator's own). Kubernetes' own limits where a field
mirrors one of its fields.
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1

MAX_REPLICAS = 1000
MAX_STABILIZATION_SECONDS = 3600  # as the HorizontalPodAutoscaler's behavior windows
MAX_SCALE_TO_ZERO_SECONDS = 86400
MAX_CONCURRENT_REQUESTS = 65536
MAX_PARALLELISM = 64  # tensor and pipeline: GPUs per node / pods per replica
MAX_PARAMETERS_BILLIONS = 100_000.0
MAX_GPU_MEMORY_GIB = 4096.0
MAX_TARGET_QUEUE_DEPTH = 1_000_000.0
MAX_QUEUED_REQUESTS = 100_000  # per service and gateway replica: each holds an open connection
MAX_WAIT_SECONDS = 3600
MAX_WEIGHTS_NODES = 64  # status.weights entries: a service's cache nodes shown at most
MAX_PREFETCH_NODES = 16  # spec.model.cache.prefetchNodes: warm nodes kept beyond the serving ones

DNS_LABEL = 63  # Service names, label values
DNS_SUBDOMAIN = 253  # object names
QUALIFIED_NAME = 317  # label keys and resource names: a 253-character prefix, '/', 63 characters
IMAGE = 512
ARG = 4096
ARGS = 128
ENV = 128
ENV_VALUE = 32768
QUERY = 4096
PATH = 1024
SOURCE = 1024
TOLERATIONS = 64
NODE_SELECTOR = 64
CAPABILITIES = 64
CAPABILITY = 64

# An InferenceService's name is its Service's name (a DNS-1035 label) and a label value of every
# child; multi-node group names are shortened with a hash (planning/groups.py), so the name itself
# is the longest of them.
MAX_SERVICE_NAME = DNS_LABEL
