"""The Gateway API Inference Extension's InferencePool of a service, where the cluster serves it.

A cluster's Envoy-based gateway and its endpoint picker (llm-d, GKE, kgateway, Istio) route to an
InferencePool: the pods a label selector names, on a port, and the picker's Service. inferfleet
emits one per InferenceService beside its own Service, with the same pods (a multi-node replica's
leader only) and port, so that such a gateway can route instead of (or beside) inferfleet's. The
picker is the platform's: by default a Service named `<service>-epp` on port 9002, as the
extension's own chart names the picker of a pool.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from inferfleet.planning.service import ServicePlan

API_GROUP = "inference.networking.k8s.io"
API_VERSION = "v1"
KIND = "InferencePool"
PLURAL = "inferencepools"
CRD_NAME = f"{PLURAL}.{API_GROUP}"
FAILURE_MODES = ("FailOpen", "FailClose")


@dataclass(frozen=True)
class EndpointPicker:
    """The endpoint picker's Service each pool names (`{service}` stands for the service's name)."""

    service: str = "{service}-epp"
    port: int = 9002
    failure_mode: str = "FailClose"
    """What the gateway does when the picker does not answer: FailClose refuses the request."""

    def service_for(self, service: str) -> str:
        return self.service.replace("{service}", service)


def build_inference_pool(client_service: dict[str, Any], picker: EndpointPicker) -> dict[str, Any]:
    """The pool of the pods `client_service` (the service's own Service) selects, on its port (the
    engine's: the Service's targetPort is the engine container's `http` port)."""
    meta = client_service["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
            "ownerReferences": copy.deepcopy(meta["ownerReferences"]),
        },
        "spec": {
            "selector": {"matchLabels": dict(client_service["spec"]["selector"])},
            "targetPorts": [{"number": client_service["spec"]["ports"][0]["port"]}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": picker.service_for(meta["name"]),
                "port": {"number": picker.port},
                "failureMode": picker.failure_mode,
            },
        },
    }


def plan_inference_pool(plan: ServicePlan, service: str, picker: EndpointPicker) -> ServicePlan:
    """`plan` with the pool of its client Service added; unchanged when it applies no Service
    named `service` (a blocked service's plan applies nothing)."""
    client_service = next(
        (c for c in plan.children if c["kind"] == "Service" and c["metadata"]["name"] == service), None
    )
    if client_service is None:
        return plan
    return dataclasses.replace(plan, children=[*plan.children, build_inference_pool(client_service, picker)])
