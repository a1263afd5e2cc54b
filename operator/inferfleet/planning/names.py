"""Labels, annotations and names shared by the objects inferfleet creates."""

from __future__ import annotations

FIELD_MANAGER = "inferfleet"
SERVICE_LABEL = "inferfleet.io/service"
REPLICA_LABEL = "inferfleet.io/replica"
SHARD_RANK_LABEL = "inferfleet.io/shard-rank"
MANAGED_BY = {"app.kubernetes.io/managed-by": "inferfleet"}

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, as GPU feature discovery writes it
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def selector_labels(service: str) -> dict[str, str]:
    """The labels every engine pod of `service` carries; the scale subresource's selector."""
    return {SERVICE_LABEL: service}


def selector_string(service: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(service).items())


def child_labels(service: str, engine: str) -> dict[str, str]:
    return {
        **selector_labels(service),
        "app.kubernetes.io/name": engine,
        "app.kubernetes.io/instance": service,
        "app.kubernetes.io/component": "inference-engine",
        **MANAGED_BY,
    }
