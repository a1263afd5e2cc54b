"""What one installation lets its tenants ask for: the operator is no confused deputy.

A user who may create an InferenceService in a namespace must get nothing through the
operator that they could not do directly. The CRD bounds what any spec may say; this policy
is the platform team's narrower say (chart values), checked before anything is planned. A
violation blocks the service with reason PolicyViolation and names the offending field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from inferfleet.api import InferenceServiceSpec

DEFAULT_MAX_REPLICAS_PER_SERVICE = 64
DEFAULT_GPU_RESOURCE_NAMES = frozenset({"nvidia.com/gpu", "amd.com/gpu"})
CONTROL_PLANE_TAINTS = frozenset({"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"})


@dataclass(frozen=True)
class TenantPolicy:
    """The installation's limits on engine pods (chart values `limits` and `policy`)."""

    max_replicas_per_service: int = DEFAULT_MAX_REPLICAS_PER_SERVICE
    allowed_capabilities: frozenset[str] = frozenset()
    """Linux capabilities an engine container may add (none by default)."""
    allowed_priority_classes: frozenset[str] = frozenset()
    """PriorityClasses engine pods may use (none by default: a tenant's pods could otherwise
    preempt every other tenant's, e.g. with system-cluster-critical)."""
    gpu_resource_names: frozenset[str] = DEFAULT_GPU_RESOURCE_NAMES
    """Extended resources that are GPUs on this cluster; accelerator.resourceName must be one."""


def compute_policy_violations(spec: InferenceServiceSpec, policy: TenantPolicy) -> list[str]:
    """Each field of `spec` the installation's policy refuses, with why (empty: allowed)."""
    return [*_size_violations(spec, policy), *_pod_violations(spec, policy)]


def _size_violations(spec: InferenceServiceSpec, policy: TenantPolicy) -> Iterator[str]:
    limit = policy.max_replicas_per_service
    hint = f"this installation's limit of {limit} per service (chart value limits.maxReplicasPerService)"
    if spec.replicas > limit:
        yield f"spec.replicas: {spec.replicas} is above {hint}"
    if spec.scaling is not None and spec.scaling.max_replicas > limit:
        yield f"spec.scaling.maxReplicas: {spec.scaling.max_replicas} is above {hint}"


def _pod_violations(spec: InferenceServiceSpec, policy: TenantPolicy) -> Iterator[str]:
    resource = spec.accelerator.resource_name
    if resource not in policy.gpu_resource_names:
        allowed = ", ".join(sorted(policy.gpu_resource_names))
        yield f"spec.accelerator.resourceName: {resource} is not a GPU resource of this cluster ({allowed})"
    yield from _security_context_violations(spec, policy)
    for i, toleration in enumerate(spec.scheduling.tolerations):
        field = f"spec.scheduling.tolerations[{i}]"
        if toleration.key is None:
            yield f"{field}: a toleration of every taint is not allowed; name the taint's key"
        elif toleration.key in CONTROL_PLANE_TAINTS:
            yield f"{field}: engine pods may not tolerate the control-plane taint {toleration.key}"
    priority = spec.scheduling.priority_class_name
    if priority is not None and priority not in policy.allowed_priority_classes:
        allowed = ", ".join(sorted(policy.allowed_priority_classes)) or "none"
        yield (
            f"spec.scheduling.priorityClassName: {priority} is not allowed (allowed: {allowed}; "
            "chart value policy.allowedPriorityClasses)"
        )


def _security_context_violations(spec: InferenceServiceSpec, policy: TenantPolicy) -> Iterator[str]:
    context = spec.engine.security_context
    if context is None:
        return
    field = "spec.engine.securityContext"
    added = context.capabilities.add if context.capabilities else []
    refused = sorted(set(added) - policy.allowed_capabilities)
    if refused:
        allowed = ", ".join(sorted(policy.allowed_capabilities)) or "none"
        yield (
            f"{field}.capabilities.add: {', '.join(refused)} not allowed (allowed: {allowed}; "
            "chart value policy.allowedCapabilities)"
        )
    if context.run_as_user == 0:
        yield f"{field}.runAsUser: 0 (root) is not allowed"
    if context.seccomp_profile is not None and context.seccomp_profile.type == "Unconfined":
        yield f"{field}.seccompProfile: Unconfined is not allowed"
