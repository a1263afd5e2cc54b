"""Memory of well-known GPU products, as GPU feature discovery labels them (nvidia.com/gpu.memory, MiB).

Lets `inferfleet plan` size a model for a named product without a cluster or accelerator.memoryGiB.
"""

from __future__ import annotations

KNOWN_GPU_MEMORY_MIB: dict[str, int] = {
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-H200": 143771,
    "NVIDIA-A100-SXM4-40GB": 40960,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-L40S": 46068,
    "NVIDIA-L4": 23034,
}


def known_gpu_memory_gib(product: str | None) -> float | None:
    mib = KNOWN_GPU_MEMORY_MIB.get(product or "")
    return mib / 1024 if mib else None
