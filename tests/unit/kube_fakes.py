"""A fake Kubernetes API for narrow unit tests of the handlers: the kube/ calls they make,
recorded, with the answers a test gives. Integration tests prove the real calls."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from inferfleet.handlers.indexes import ClusterView
from inferfleet.kube.apply import NameConflictError
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.observed import ObservedGroup
from inferfleet.runtime.config import OperatorConfig
from inferfleet.runtime.operator import OperatorRuntime

A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
SMALL_SPEC: dict[str, Any] = {
    "model": {
        "name": "llama-3.1-8b-instruct",
        "source": "hf://meta-llama/Llama-3.1-8B-Instruct",
        "parametersBillions": 8.03,
        "architecture": {"numLayers": 32, "hiddenSize": 4096, "numAttentionHeads": 32, "numKeyValueHeads": 8},
        "maxModelLen": 8192,
    },
    "engine": {"kind": "vllm"},
    "accelerator": {"product": "NVIDIA-A100-SXM4-40GB"},
    "replicas": 1,
}


def a100(name: str, **kwargs: Any) -> GpuNode:
    return GpuNode(name, "NVIDIA-A100-SXM4-40GB", 8, 40.0, A100, **kwargs)


def service(name: str = "llama", spec: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "inferfleet.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"namespace": "ml", "name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": copy.deepcopy(SMALL_SPEC if spec is None else spec),
        "status": {},
    }


def view(
    services: list[dict[str, Any]],
    nodes: list[GpuNode] = (),  # type: ignore[assignment]
    groups: list[ObservedGroup] = (),  # type: ignore[assignment]
) -> ClusterView:
    by_key: dict[tuple[str, str], list[ObservedGroup]] = {}
    for g in groups:
        by_key.setdefault((g.namespace, g.service), []).append(g)
    return ClusterView(
        {(s["metadata"]["namespace"], s["metadata"]["name"]): [s] for s in services},  # type: ignore[arg-type]
        {n.name: [n] for n in nodes},  # type: ignore[arg-type]
        {},  # type: ignore[arg-type]
        by_key,  # type: ignore[arg-type]
        {},  # type: ignore[arg-type]
        {},  # type: ignore[arg-type]
    )


def refused(status: int, message: str) -> ApiException:
    e = ApiException(status=status, reason="Unprocessable Entity")
    e.body = f'{{"kind":"Status","message":"{message}"}}'
    return e


class FakeKube:
    """Records writes; `refuse[kind]` makes applying that kind fail, `taken` holds names of
    objects the service does not control."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[tuple[str, str]] = []
        self.deleted_groups: list[int] = []
        self.deleted_pods: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.scaled: list[int] = []
        self.refuse: dict[str, ApiException] = {}
        self.taken: set[str] = set()
        self.failed_create: str | None = None
        self.pools_served = False
        """Whether the fake API server serves InferencePools (asked by discovery)."""
        self.discovery_error: ApiException | None = None
        self.discoveries = 0
        self.taken_pools: set[str] = set()
        monkeypatch.setattr(
            "inferfleet.handlers.inference_pools.is_inference_pool_served", self.discover_pools
        )
        for module in ("reconciler", "service_status", "node_loss", "autoscaler", "inference_pools"):
            target = f"inferfleet.handlers.{module}"
            for name, fake in (
                ("apply_child", self.apply_child),
                ("delete_group", self.delete_group),
                ("delete_pod", self.delete_pod),
                ("patch_inference_service_status", self.patch_status),
                ("post_event", self.post_event),
                ("latest_failed_create", lambda api, ns, uid: self.failed_create),
                ("scale_inference_service", self.scale),
            ):
                monkeypatch.setattr(f"{target}.{name}", fake, raising=False)

    def apply_child(self, api: Any, obj: dict[str, Any], owner_uid: str, known: bool) -> dict[str, Any]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in self.refuse:
            raise self.refuse[kind]
        if name in self.taken or (kind == "InferencePool" and name in self.taken_pools):
            raise NameConflictError(kind, name)
        self.applied.append((kind, name))
        stored = copy.deepcopy(obj)
        stored["metadata"].update(uid=f"uid-{kind}-{name}", generation=1, resourceVersion="10")
        return stored

    def delete_group(self, api: Any, namespace: str, service: str, replica: int, *_: Any) -> None:
        self.deleted_groups.append(replica)

    def discover_pools(self, api: Any) -> bool:
        self.discoveries += 1
        if self.discovery_error is not None:
            raise self.discovery_error
        return self.pools_served

    def delete_pod(self, api: Any, namespace: str, name: str) -> None:
        self.deleted_pods.append(name)

    def patch_status(self, api: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(copy.deepcopy(status))

    def post_event(self, api: Any, involved: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def scale(self, api: Any, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append(replicas)


def runtime() -> OperatorRuntime:
    return OperatorRuntime(OperatorConfig(workers=1), api=object())


def ready_condition(status: dict[str, Any]) -> tuple[str, str, str]:
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["reason"], ready["message"]
