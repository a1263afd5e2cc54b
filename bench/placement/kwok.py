"""`--kwok`: the least-allocated arm checked against the real kube-scheduler on the local cluster.

The local cluster's H100 nodes get the same kind of seeded fragmentation (pods bound directly with
spec.nodeName) and a small seeded arrival sequence; each arrival's pods are created one at a time
and each is waited for until it is bound or marked Unschedulable, so the scheduler sees them in
the simulation's order. Pods request CPU and memory in proportion to their GPUs: the default
scheduler scores cpu and memory only (NodeResourcesFit LeastAllocated), so on identical nodes
this makes its score the free-GPU fraction the simulation uses.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from bench.placement.arms import LEAST_ALLOCATED, FreeGpus, Outcome, least_allocated_ties, run_heuristics
from bench.placement.cluster import RACK_LABEL, Case, Cluster, Node, Params, case_rng, fragment, make_arrivals
from bench.placement.metrics import COUNT_KEYS, count
from bench.placement.report import describe
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.inventory import GPU_RESOURCE, Inventory, build_nodes, load_inventory
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.names import GPU_PRODUCT_LABEL

H100 = "NVIDIA-H100-80GB-HBM3"
NAMESPACE = "bench-placement"
REPLICA_LABEL = "bench.inferfleet.io/replica"
ROLE_LABEL = "bench.inferfleet.io/role"
REAL = "kube-scheduler (KWOK)"
KWOK_GROUP_WEIGHT = 0.3


@dataclass(frozen=True)
class PerGpu:
    """CPU (millicores) and memory (bytes) a pod requests per GPU: the node's share of one GPU."""

    cpu_m: int
    memory: int


def h100_nodes(inventory: Inventory) -> tuple[Node, ...]:
    nodes = []
    for obj in build_nodes(inventory):
        labels = obj["metadata"]["labels"]
        if labels.get(GPU_PRODUCT_LABEL) == H100:
            gpus = int(obj["status"]["allocatable"][GPU_RESOURCE])
            nodes.append(Node(obj["metadata"]["name"], labels[inventory.rack_label], gpus))
    return tuple(sorted(nodes, key=lambda n: n.name))


def kwok_cases(seed: int, params: Params, inventory: Inventory, instances: int) -> list[Case]:
    """Seeded instances on the H100 nodes: groups no larger than a rack, KWOK_GROUP_WEIGHT of them."""
    nodes = h100_nodes(inventory)
    rack_size = max(sum(1 for n in nodes if n.rack == r) for r in {n.rack for n in nodes})
    group_pods = tuple(p for p in params.group_pods if p <= rack_size) or (rack_size,)
    small = replace(params, group_pods=group_pods, group_weight=KWOK_GROUP_WEIGHT)
    cases = []
    for i in range(instances):
        cluster = Cluster(nodes, fragment(nodes, case_rng(seed, "kwok", i, "fragment"), small.empty_share))
        arrivals = make_arrivals(sum(cluster.free().values()), case_rng(seed, "kwok", i, "arrivals"), small)
        cases.append(Case(f"kwok-h100#{i}", cluster, arrivals))
    return cases


def per_gpu_requests(inventory: Inventory) -> PerGpu:
    [pool] = [p for p in inventory.pools.values() if p.product == H100]
    return PerGpu(
        cpu_m=int(parse_quantity(pool.cpu) * 1000 / pool.gpus),
        memory=int(parse_quantity(pool.memory) / pool.gpus),
    )


def pod_manifest(
    name: str,
    gpus: int,
    per_gpu: PerGpu,
    inventory: Inventory,
    *,
    node: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """A plain GPU pod; a group member carries the required pod affinity to its group's rack."""
    requests = {
        "cpu": f"{gpus * per_gpu.cpu_m}m",
        "memory": str(gpus * per_gpu.memory),
        GPU_RESOURCE: str(gpus),
    }
    taint = inventory.taint
    resources = {"requests": requests, "limits": {GPU_RESOURCE: str(gpus)}}
    toleration = {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
    spec: dict[str, Any] = {
        "containers": [{"name": "engine", "image": "registry.k8s.io/pause:3.10", "resources": resources}],
        "nodeSelector": {GPU_PRODUCT_LABEL: H100},
        "tolerations": [toleration],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
    }
    labels = {ROLE_LABEL: "prebound" if node else "arrival"}
    if node is not None:
        spec["nodeName"] = node
    if group is not None:
        labels[REPLICA_LABEL] = group
        term = {"labelSelector": {"matchLabels": {REPLICA_LABEL: group}}, "topologyKey": RACK_LABEL}
        spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _bound_or_refused(core: Any, namespace: str, name: str) -> tuple[str | None] | None:
    """(node,) once bound, (None,) once the scheduler marked it Unschedulable, else None (not yet)."""
    pod = core.read_namespaced_pod(name, namespace)
    if pod.spec.node_name:
        return (str(pod.spec.node_name),)
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return (None,)
    return None


def _pods_on(core: Any, nodes: tuple[Node, ...]) -> list[str]:
    names = {n.name for n in nodes}
    return [
        f"{p.metadata.namespace}/{p.metadata.name}"
        for p in core.list_pod_for_all_namespaces().items
        if p.spec.node_name in names
    ]


def replay(
    core: Any, case: Case, namespace: str, per_gpu: PerGpu, inventory: Inventory, timeout: float
) -> Outcome:
    """Pre-existing pods bound directly, then each arrival's pods one at a time, in order."""
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        lambda: core.read_namespaced_service_account("default", namespace),
        timeout=timeout,
        what=f"the default service account of {namespace}",
    )
    for i, (node, gpus) in enumerate(case.cluster.prebound):
        core.create_namespaced_pod(
            namespace, pod_manifest(f"pre-{i:03d}", gpus, per_gpu, inventory, node=node)
        )

    def prebound_running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{ROLE_LABEL}=prebound").items
        return len(pods) == len(case.cluster.prebound) and all(p.status.phase == "Running" for p in pods)

    wait_for(prebound_running, timeout=timeout, what="the pre-existing pods to run")
    out = Outcome(REAL, {})
    for a in case.arrivals:
        nodes: list[str | None] = []
        for k in range(a.pods):
            name = f"{a.id}-{k}"
            group = a.id if a.is_group else None
            core.create_namespaced_pod(
                namespace, pod_manifest(name, a.gpus_per_pod, per_gpu, inventory, group=group)
            )
            started = time.perf_counter()
            [bound] = wait_for(
                partial(_bound_or_refused, core, namespace, name),
                timeout=timeout,
                what=f"pod {namespace}/{name} to be bound or Unschedulable",
                interval=0.05,
            )
            out.decision_ms.append((time.perf_counter() - started) * 1000)
            nodes.append(bound)
        out.placements[a.id] = tuple(nodes)
        print(f"  {case.name} {a.id} {a.pods}x{a.gpus_per_pod} GPUs -> {nodes}", file=sys.stderr)
    return out


def nodes_schedulable(core: Any, nodes: tuple[Node, ...], inventory: Inventory) -> bool:
    """Ready, not cordoned, no taint but the GPU one: a new node keeps node.kubernetes.io/not-ready
    until the node lifecycle controller's next pass, which can come after kwokctl reports it Ready."""
    allowed = {(inventory.taint.key, inventory.taint.effect)}
    for node in nodes:
        obj = core.read_node(node.name)
        taints = {(t.key, t.effect) for t in obj.spec.taints or []}
        ready = any(c.type == "Ready" and c.status == "True" for c in obj.status.conditions or [])
        if taints - allowed or not ready or obj.spec.unschedulable:
            return False
    return True


def clear(core: Any, namespace: str, nodes: tuple[Node, ...], timeout: float) -> None:
    """Delete the instance's pods and wait until none is left on the nodes (or pending)."""
    core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
    wait_for(
        lambda: not core.list_namespaced_pod(namespace).items and not _pods_on(core, nodes),
        timeout=timeout,
        what=f"the pods of {namespace} to be gone",
    )


def least_allocated_deviations(case: Case, real: Outcome) -> list[str]:
    """Pods the real scheduler did not put on a node LeastAllocated scores highest (or did not refuse
    when none fits), replaying its own earlier choices; none means the model holds up to tie-breaking."""
    state = FreeGpus(case.cluster)
    deviations = []
    for a in case.arrivals:
        rack: str | None = None
        for k, node in enumerate(real.placements[a.id]):
            top = least_allocated_ties(state, a.gpus_per_pod, rack)
            if (node not in top) if node is not None else bool(top):
                deviations.append(
                    f"{case.name} {a.id}-{k} ({a.gpus_per_pod} GPUs): {node}, top {sorted(top)}"
                )
            if node is not None:
                state.take(node, a.gpus_per_pod)
                rack = rack or state.rack[node]
    return deviations


def compare(cases: list[Case], real: list[Outcome]) -> dict[str, Any]:
    """Counts summed over the instances, real scheduler vs every simulated heuristic arm."""
    arms: dict[str, dict[str, int]] = {}
    same_node = same_fate = pods = 0
    deviations: list[str] = []
    instances = []
    for case, out in zip(cases, real, strict=True):
        sim = run_heuristics(case)
        la = sim[LEAST_ALLOCATED]
        counts = {REAL: count(case, out), **{f"{arm} (simulated)": count(case, o) for arm, o in sim.items()}}
        for arm, c in counts.items():
            total = arms.setdefault(arm, dict.fromkeys(COUNT_KEYS, 0))
            for key in COUNT_KEYS:
                total[key] += c[key]
        ids = [(a.id, k) for a in case.arrivals for k in range(a.pods)]
        pods += len(ids)
        deviations += least_allocated_deviations(case, out)
        same_node += sum(out.placements[i][k] == la.placements[i][k] for i, k in ids)
        same_fate += sum((out.placements[i][k] is None) == (la.placements[i][k] is None) for i, k in ids)
        instances.append({
            "case": case.name,
            "prebound": [list(p) for p in case.cluster.prebound],
            "arrivals": [[a.id, a.pods, a.gpus_per_pod] for a in case.arrivals],
            "counts": counts,
            "placements": {REAL: out.placements, f"{LEAST_ALLOCATED} (simulated)": la.placements},
        })  # fmt: skip
    waits = [ms / 1000 for out in real for ms in out.decision_ms]
    return {
        "cluster": describe(cases),
        "nodes": {n.name: n.rack for n in cases[0].cluster.nodes},
        "arms": arms,
        "pods": pods,
        "pods_on_same_node_as_simulated": same_node,
        "pods_bound_or_refused_as_simulated": same_fate,
        "pods_where_least_allocated_scores_highest": pods - len(deviations),
        "deviations_from_least_allocated": deviations,
        "seconds_to_bind_or_refuse": {
            "mean": round(sum(waits) / len(waits), 3) if waits else None,
            "max": round(max(waits, default=0.0), 3),
        },
        "instances": instances,
    }


def run_kwok(seed: int, params: Params, *, instances: int = 4, pod_timeout_s: float = 60.0) -> dict[str, Any]:
    """Create the local cluster, replay every instance, compare; the cluster is always deleted."""
    inventory = load_inventory()
    cases = kwok_cases(seed, params, inventory, instances)
    per_gpu = per_gpu_requests(inventory)
    local = LocalCluster(name="bench-placement")
    started = time.monotonic()
    print("creating the local KWOK cluster bench-placement ...", file=sys.stderr)
    real: list[Outcome] = []
    try:
        local.create()
        print(f"cluster up after {time.monotonic() - started:.0f} s; replaying", file=sys.stderr)
        core = client.CoreV1Api(local.api_client())
        nodes = cases[0].cluster.nodes
        wait_for(
            partial(nodes_schedulable, core, nodes, inventory),
            timeout=180,
            what="the H100 nodes to be Ready with no taint but the GPU one",
        )
        others = _pods_on(core, nodes)
        if others:
            raise RuntimeError(f"pods already run on the H100 nodes, the replay would not match: {others}")
        for i, case in enumerate(cases):
            namespace = f"{NAMESPACE}-{i}"
            real.append(replay(core, case, namespace, per_gpu, inventory, pod_timeout_s))
            clear(core, namespace, nodes, pod_timeout_s)
    finally:
        print("deleting the local cluster bench-placement", file=sys.stderr)
        local.delete()
    report = compare(cases, real)
    report["kube_version"] = local.binaries.kube_version if local.binaries else None
    report["pod_requests_per_gpu"] = {"cpu_m": per_gpu.cpu_m, "memory_bytes": per_gpu.memory}
    report["group_weight"] = KWOK_GROUP_WEIGHT
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def kwok_table(report: dict[str, Any]) -> str:
    d = report["cluster"]
    racks = len(set(report["nodes"].values()))
    groups = ", ".join(f"{v} of {k}" for k, v in d["groups_by_pods"].items()) or "none"
    singles = ", ".join(f"{v} of {k}" for k, v in d["singles_by_gpus"].items())
    lines = [
        f"== KWOK, kube-scheduler {report['kube_version']}: {len(report['nodes'])} H100 nodes in {racks} "
        f"racks, {d['instances']} instances (summed): {d['pre_taken_gpus']} of {d['gpus']} GPUs taken by "
        f"{d['pre_bound_pods']} pods before, {d['free_gpus']} free",
        f"   arrivals: {d['replicas']} replicas asking {d['gpus_offered']} GPUs (single pods by GPUs: "
        f"{singles}; groups: {groups})",
        f"{'arm':<31} {'placed':>6} {'single':>6} {'groups':>6} {'partial':>7} {'serving':>7} "
        f"{'stranded (held+free)':>20}",
    ]
    for arm, m in report["arms"].items():
        stranded = f"{m['stranded_gpus']} ({m['gpus_held_by_partial_groups']}+{m['stranded_free_gpus']})"
        lines.append(
            f"{arm:<31} {m['replicas_placed']:>6} {m['singles_placed']:>6} {m['groups_placed']:>6} "
            f"{m['partial_groups']:>7} {m['gpus_serving']:>7} {stranded:>20}"
        )
    real, sim = (report["arms"][k] for k in (REAL, f"{LEAST_ALLOCATED} (simulated)"))
    same = all(real[k] == sim[k] for k in COUNT_KEYS)
    waits = report["seconds_to_bind_or_refuse"]
    lines += [
        f"real vs simulated least-allocated: counts {'identical' if same else 'DIFFER'}; "
        f"pods on the same node {report['pods_on_same_node_as_simulated']}/{report['pods']}, "
        f"bound-or-refused as simulated {report['pods_bound_or_refused_as_simulated']}/{report['pods']}; "
        f"real choices among LeastAllocated's top-scored nodes (or refused when none fits) "
        f"{report['pods_where_least_allocated_scores_highest']}/{report['pods']} "
        "(the real scheduler breaks score ties at random, the simulation by name)",
        f"seconds from create to bound/Unschedulable: mean {waits['mean']}, max {waits['max']}; "
        f"wall time {report['wall_seconds']:.0f} s (cluster creation included)",
    ]
    lines += [f"  deviates: {d}" for d in report["deviations_from_least_allocated"][:10]]
    return "\n".join(lines)
