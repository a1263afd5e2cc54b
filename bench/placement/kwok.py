"""`--kwok`: the least-allocated and inferfleet+mostallocated arms checked against the real
kube-scheduler on the local cluster.

The local cluster's H100 nodes get the same kind of seeded fragmentation (pods bound directly with
spec.nodeName) and a small seeded arrival sequence; each arrival's pods are created one at a time
and each is waited for until it is bound or marked Unschedulable, so the scheduler sees them in
the simulation's order. Every sequence is replayed twice:

* default profile, every pod by the scheduler (groups as pods with a required pod affinity to
  their rack): the least-allocated baseline. Pods request CPU and memory in proportion to their
  GPUs: the default profile scores cpu and memory only (NodeResourcesFit LeastAllocated), so on
  identical nodes this makes its score the free-GPU fraction the simulation uses.
* the product with the binpack profile: single pods with schedulerName `inferfleet-binpack`
  (NodeResourcesFit MostAllocated on nvidia.com/gpu only); groups planned by
  `plan_group_placement` on the replay's own bound pods and pinned with the operator's required
  node affinity (hostname In the planned nodes, rack In the planned rack) and hostname
  anti-affinity.

A probe then checks that the binpack profile scores nvidia.com/gpu alone: with proportional
requests, MostAllocated on gpu and on gpu+cpu+memory rank nodes the same, so the probe uses pods
whose cpu/memory and GPU requests disagree.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from bench.placement.arms import (
    INFERFLEET_MOSTALLOCATED,
    LEAST,
    LEAST_ALLOCATED,
    MAX_NODE_SCORE,
    MOST,
    FreeGpus,
    Outcome,
    Strategy,
    gpu_nodes,
    plan,
    run_heuristics,
    top_scored,
)
from bench.placement.cluster import (
    RACK_LABEL,
    Arrival,
    Case,
    Cluster,
    Node,
    Params,
    case_rng,
    fragment,
    make_arrivals,
)
from bench.placement.metrics import COUNT_KEYS, count
from bench.placement.report import describe
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.inventory import GPU_RESOURCE, Inventory, build_nodes, load_inventory
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.names import GPU_PRODUCT_LABEL, HOSTNAME_LABEL
from inferfleet.planning.placement import BoundPod

H100 = "NVIDIA-H100-80GB-HBM3"
NAMESPACE = "bench-placement"
REPLICA_LABEL = "bench.inferfleet.io/replica"
ROLE_LABEL = "bench.inferfleet.io/role"
REAL = "kube-scheduler (KWOK)"
REAL_BINPACK = "inferfleet, binpack profile (KWOK)"
BINPACK_SCHEDULER = "inferfleet-binpack"
SIM_LA = f"{LEAST_ALLOCATED} (simulated)"
SIM_MA = f"{INFERFLEET_MOSTALLOCATED} (simulated)"
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
    pinned: tuple[str, tuple[str, ...]] | None = None,
    scheduler: str | None = None,
    cpu_memory_gpus: int | None = None,
) -> dict[str, Any]:
    """A plain GPU pod. A group member carries the required pod affinity to its group's rack, or
    with `pinned` (rack, nodes) the operator's placement instead: required node affinity to those
    nodes in that rack and anti-affinity to its group's other pods by hostname. `cpu_memory_gpus`
    requests the cpu and memory of that many GPUs instead of `gpus`' (the probe only)."""
    share = gpus if cpu_memory_gpus is None else cpu_memory_gpus
    requests = {
        "cpu": f"{share * per_gpu.cpu_m}m",
        "memory": str(share * per_gpu.memory),
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
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    if group is not None:
        labels[REPLICA_LABEL] = group
        selector = {"matchLabels": {REPLICA_LABEL: group}}
        if pinned is None:
            term = {"labelSelector": selector, "topologyKey": RACK_LABEL}
            spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
        else:
            rack, nodes = pinned
            match = [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": list(nodes)},
                {"key": RACK_LABEL, "operator": "In", "values": [rack]},
            ]
            anti = {"labelSelector": selector, "topologyKey": HOSTNAME_LABEL}
            spec["affinity"] = {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": match}]
                    }
                },
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [anti]},
            }
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


def _start(
    core: Any,
    namespace: str,
    prebound: tuple[tuple[str, int], ...],
    per_gpu: PerGpu,
    inventory: Inventory,
    timeout: float,
    cpu_memory_gpus: tuple[int | None, ...] = (),
) -> None:
    """The namespace, and the pre-existing pods bound directly with spec.nodeName, running."""
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(
        lambda: core.read_namespaced_service_account("default", namespace),
        timeout=timeout,
        what=f"the default service account of {namespace}",
    )
    shares = cpu_memory_gpus or (None,) * len(prebound)
    for i, ((node, gpus), share) in enumerate(zip(prebound, shares, strict=True)):
        manifest = pod_manifest(f"pre-{i:03d}", gpus, per_gpu, inventory, node=node, cpu_memory_gpus=share)
        core.create_namespaced_pod(namespace, manifest)

    def prebound_running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{ROLE_LABEL}=prebound").items
        return len(pods) == len(prebound) and all(p.status.phase == "Running" for p in pods)

    wait_for(prebound_running, timeout=timeout, what="the pre-existing pods to run")


def _schedule(
    core: Any, namespace: str, manifest: dict[str, Any], timeout: float
) -> tuple[str | None, float]:
    """Create one pod and wait until it is bound or Unschedulable: (its node or None, ms waited)."""
    name = manifest["metadata"]["name"]
    core.create_namespaced_pod(namespace, manifest)
    started = time.perf_counter()
    [bound] = wait_for(
        partial(_bound_or_refused, core, namespace, name),
        timeout=timeout,
        what=f"pod {namespace}/{name} to be bound or Unschedulable",
        interval=0.05,
    )
    return bound, (time.perf_counter() - started) * 1000


def replay(
    core: Any,
    case: Case,
    namespace: str,
    per_gpu: PerGpu,
    inventory: Inventory,
    timeout: float,
    *,
    binpack: bool = False,
) -> Outcome:
    """Pre-existing pods bound directly, then each arrival's pods one at a time, in order.

    Without `binpack`, every pod goes to the default profile (a group's pods with the required pod
    affinity to their rack). With it, as the product with the binpack profile: a single pod goes to
    the `inferfleet-binpack` profile; a group is planned by `plan_group_placement` on the pods the
    replay has bound so far and its pods pinned there (none created when the planner finds no place).
    """
    _start(core, namespace, case.cluster.prebound, per_gpu, inventory, timeout)
    out = Outcome(REAL_BINPACK if binpack else REAL, {})
    rack_of = {n.name: n.rack for n in case.cluster.nodes}
    nodes_of = gpu_nodes(case.cluster)
    bound_pods = [BoundPod(node, gpus) for node, gpus in case.cluster.prebound]
    for a in case.arrivals:
        group = a.id if a.is_group else None
        pinned: tuple[str, tuple[str, ...]] | None = None
        if binpack and a.is_group:
            planned = [n for n in plan(nodes_of, bound_pods, a) if n is not None]
            if not planned:
                out.placements[a.id] = (None,) * a.pods
                print(f"  {out.arm} {case.name} {a.id} {a.pods}x{a.gpus_per_pod}: no place", file=sys.stderr)
                continue
            pinned = (rack_of[planned[0]], tuple(planned))
        scheduler = BINPACK_SCHEDULER if binpack and not a.is_group else None
        nodes: list[str | None] = []
        for k in range(a.pods):
            manifest = pod_manifest(
                f"{a.id}-{k}",
                a.gpus_per_pod,
                per_gpu,
                inventory,
                group=group,
                pinned=pinned,
                scheduler=scheduler,
            )
            node, ms = _schedule(core, namespace, manifest, timeout)
            out.decision_ms.append(ms)
            nodes.append(node)
        out.placements[a.id] = tuple(nodes)
        bound_pods += [BoundPod(n, a.gpus_per_pod, group) for n in nodes if n is not None]
        print(f"  {out.arm} {case.name} {a.id} {a.pods}x{a.gpus_per_pod} GPUs -> {nodes}", file=sys.stderr)
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


def _sorted(nodes: tuple[str | None, ...]) -> tuple[str | None, ...]:
    return tuple(sorted(nodes, key=lambda n: (n is None, n or "")))


def deviations(
    case: Case, real: Outcome, strategy: Strategy, *, planned_groups: bool = False
) -> tuple[list[str], list[str]]:
    """(pods, groups) that do not follow the model, replaying the real outcome's own earlier choices.

    A pod deviates when the real scheduler did not put it on a node `strategy` scores highest (or
    did not refuse it when none fits); none means the model holds up to tie-breaking. With
    `planned_groups`, a group's pods are not scored: the group deviates when its nodes are not the
    ones `plan_group_placement` picks on the same state (the nodes the operator pins it to)."""
    state = FreeGpus(case.cluster)
    nodes_of = gpu_nodes(case.cluster)
    bound = [BoundPod(node, gpus) for node, gpus in case.cluster.prebound]
    pods: list[str] = []
    groups: list[str] = []
    for a in case.arrivals:
        placed = real.placements[a.id]
        pinned = planned_groups and a.is_group
        if pinned:
            planned = plan(nodes_of, bound, a)
            if _sorted(placed) != _sorted(planned):
                groups.append(
                    f"{case.name} {a.id} ({a.pods}x{a.gpus_per_pod} GPUs): {placed}, planned {planned}"
                )
        rack: str | None = None
        for k, node in enumerate(placed):
            if not pinned:
                top = top_scored(state, a.gpus_per_pod, rack, strategy)
                if (node not in top) if node is not None else bool(top):
                    pods.append(f"{case.name} {a.id}-{k} ({a.gpus_per_pod} GPUs): {node}, top {sorted(top)}")
            if node is not None:
                state.take(node, a.gpus_per_pod)
                rack = rack or state.rack[node]
        bound += [BoundPod(n, a.gpus_per_pod, a.id if a.is_group else None) for n in placed if n is not None]
    return pods, groups


def _waits(real: list[Outcome]) -> dict[str, float | None]:
    waits = [ms / 1000 for out in real for ms in out.decision_ms]
    return {
        "mean": round(sum(waits) / len(waits), 3) if waits else None,
        "max": round(max(waits, default=0.0), 3),
    }


@dataclass
class Check:
    """How closely one real replay follows its simulated arm, summed over the instances."""

    simulated: str
    strategy: Strategy
    planned_groups: bool
    """Groups pinned where plan_group_placement put them (binpack replay) rather than scored."""
    pods: int = 0
    groups: int = 0
    same_node: int = 0
    same_fate: int = 0
    scored_pods: int = 0
    deviations: list[str] = field(default_factory=list)
    group_deviations: list[str] = field(default_factory=list)

    def add(self, case: Case, real: Outcome, sim: Outcome) -> None:
        pods = [(a, k) for a in case.arrivals for k in range(a.pods)]

        def nodes(out: Outcome, a: Arrival) -> tuple[str | None, ...]:
            # pinned group pods may swap nodes among the planned ones: compare a group's nodes as a set
            return _sorted(out.placements[a.id]) if self.planned_groups else out.placements[a.id]

        dev, group_dev = deviations(case, real, self.strategy, planned_groups=self.planned_groups)
        self.pods += len(pods)
        self.groups += sum(a.is_group for a in case.arrivals)
        self.scored_pods += sum(not (self.planned_groups and a.is_group) for a, _ in pods)
        self.same_node += sum(nodes(real, a)[k] == nodes(sim, a)[k] for a, k in pods)
        self.same_fate += sum((nodes(real, a)[k] is None) == (nodes(sim, a)[k] is None) for a, k in pods)
        self.deviations += dev
        self.group_deviations += group_dev

    def report(self, real: list[Outcome], counts_identical: bool) -> dict[str, Any]:
        return asdict(self) | {
            "scored_pods_among_top_scored": self.scored_pods - len(self.deviations),
            "groups_on_planned_nodes": self.groups - len(self.group_deviations)
            if self.planned_groups
            else None,
            "counts_identical": counts_identical,
            "seconds_to_bind_or_refuse": _waits(real),
        }


def compare(cases: list[Case], real: list[Outcome], binpack: list[Outcome] | None = None) -> dict[str, Any]:
    """Counts summed over the instances, each real replay vs every simulated heuristic arm, and per
    replay how closely it follows its simulated arm: the default profile's vs least-allocated
    (every pod scored LeastAllocated), the binpack profile's vs inferfleet+mostallocated (single
    pods scored MostAllocated on nvidia.com/gpu, groups where plan_group_placement put them)."""
    runs = {REAL: real} | ({REAL_BINPACK: binpack} if binpack is not None else {})
    checks = {
        REAL: Check(SIM_LA, LEAST, planned_groups=False),
        REAL_BINPACK: Check(SIM_MA, MOST, planned_groups=True),
    }
    arms: dict[str, dict[str, int]] = {}
    instances = []
    for n, case in enumerate(cases):
        sim = {f"{arm} (simulated)": o for arm, o in run_heuristics(case).items()}
        outs = {name: outs[n] for name, outs in runs.items()}
        counts = {name: count(case, o) for name, o in (outs | sim).items()}
        for arm, c in counts.items():
            total = arms.setdefault(arm, dict.fromkeys(COUNT_KEYS, 0))
            for key in COUNT_KEYS:
                total[key] += c[key]
        for name, out in outs.items():
            checks[name].add(case, out, sim[checks[name].simulated])
        instances.append({
            "case": case.name,
            "prebound": [list(p) for p in case.cluster.prebound],
            "arrivals": [[a.id, a.pods, a.gpus_per_pod] for a in case.arrivals],
            "counts": counts,
            "placements": {
                **{name: o.placements for name, o in outs.items()},
                **{checks[name].simulated: sim[checks[name].simulated].placements for name in outs},
            },
        })  # fmt: skip
    return {
        "cluster": describe(cases),
        "nodes": {n.name: n.rack for n in cases[0].cluster.nodes},
        "arms": arms,
        "checks": {
            name: checks[name].report(
                outs, all(arms[name][k] == arms[checks[name].simulated][k] for k in COUNT_KEYS)
            )
            for name, outs in runs.items()
        },
        "instances": instances,
    }


def probe_scores(nodes: tuple[Node, ...], used: dict[str, tuple[int, int]], gpus: int) -> dict[str, Any]:
    """NodeResourcesFit MostAllocated for a pod of `gpus` GPUs (and their cpu/memory share) on nodes
    with `used` (GPUs, cpu/memory in GPU shares) taken: on nvidia.com/gpu alone (the binpack
    profile as configured) and on gpu, cpu and memory at weight 1 each (if the configured list
    were added to the default cpu/memory one); the scheduler averages integer scores by weight."""
    gpu_only, with_cm = {}, {}
    for n in nodes:
        g, share = used.get(n.name, (0, 0))
        gpu = (g + gpus) * MAX_NODE_SCORE // n.gpus
        cpu_memory = (share + gpus) * MAX_NODE_SCORE // n.gpus
        gpu_only[n.name], with_cm[n.name] = gpu, (gpu + 2 * cpu_memory) // 3

    def top(scores: dict[str, int]) -> list[str]:
        return sorted(name for name, v in scores.items() if v == max(scores.values()))

    return {
        "gpu_only": gpu_only,
        "gpu_cpu_memory": with_cm,
        "top_gpu_only": top(gpu_only),
        "top_gpu_cpu_memory": top(with_cm),
    }


def probe_gpu_only(
    core: Any, nodes: tuple[Node, ...], per_gpu: PerGpu, inventory: Inventory, timeout: float
) -> dict[str, Any]:
    """Does `inferfleet-binpack` score nvidia.com/gpu alone? The first H100 node gets a pod with no
    GPU but the cpu/memory of 6 GPUs, the second one with 4 GPUs and no cpu/memory; a 1-GPU pod
    (with its cpu/memory share) then scores highest on the second node by GPUs alone, on the first
    if cpu and memory counted too (BalancedAllocation is the same on both: cpu and memory stay in
    proportion to each other)."""
    namespace = f"{NAMESPACE}-probe"
    a, b = nodes[0].name, nodes[1].name
    prebound, shares = ((a, 0), (b, 4)), (6, 0)
    _start(core, namespace, prebound, per_gpu, inventory, timeout, cpu_memory_gpus=shares)
    manifest = pod_manifest("probe", 1, per_gpu, inventory, scheduler=BINPACK_SCHEDULER)
    node, _ = _schedule(core, namespace, manifest, timeout)
    clear(core, namespace, nodes, timeout)
    used = {name: (g, share) for (name, g), share in zip(prebound, shares, strict=True)}
    scores = probe_scores(nodes, used, 1)
    return {
        "used_gpus_and_cpu_memory_shares": used,
        "node": node,
        **{k: scores[k] for k in ("top_gpu_only", "top_gpu_cpu_memory")},
        "scores": {k: {n: scores[k][n] for n in (a, b)} for k in ("gpu_only", "gpu_cpu_memory")},
        "gpu_only_holds": node in scores["top_gpu_only"] and node not in scores["top_gpu_cpu_memory"],
    }


def run_kwok(seed: int, params: Params, *, instances: int = 4, pod_timeout_s: float = 60.0) -> dict[str, Any]:
    """Create the local cluster, replay every instance under both profiles, probe the binpack
    profile's resources, compare; the cluster is always deleted."""
    inventory = load_inventory()
    cases = kwok_cases(seed, params, inventory, instances)
    per_gpu = per_gpu_requests(inventory)
    local = LocalCluster(name="bench-placement")
    started = time.monotonic()
    print("creating the local KWOK cluster bench-placement ...", file=sys.stderr)
    real: list[Outcome] = []
    binpack: list[Outcome] = []
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
            for outs, suffix, bp in ((real, "", False), (binpack, "-binpack", True)):
                namespace = f"{NAMESPACE}-{i}{suffix}"
                outs.append(replay(core, case, namespace, per_gpu, inventory, pod_timeout_s, binpack=bp))
                clear(core, namespace, nodes, pod_timeout_s)
        probe = probe_gpu_only(core, nodes, per_gpu, inventory, pod_timeout_s)
    finally:
        print("deleting the local cluster bench-placement", file=sys.stderr)
        local.delete()
    report = compare(cases, real, binpack)
    report["binpack_probe"] = probe
    report["kube_version"] = local.binaries.kube_version if local.binaries else None
    report["pod_requests_per_gpu"] = {"cpu_m": per_gpu.cpu_m, "memory_bytes": per_gpu.memory}
    report["group_weight"] = KWOK_GROUP_WEIGHT
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def _check_lines(name: str, chk: dict[str, Any]) -> list[str]:
    n, waits = chk["pods"], chk["seconds_to_bind_or_refuse"]
    scored = (
        f"{chk['scored_pods_among_top_scored']}/{chk['scored_pods']} "
        f"{'single pods' if chk['groups_on_planned_nodes'] is not None else 'pods'} among "
        f"{chk['strategy']}'s top-scored nodes (or refused when none fits)"
    )
    if chk["groups_on_planned_nodes"] is not None:
        scored += (
            f"; {chk['groups_on_planned_nodes']}/{chk['groups']} groups as plan_group_placement planned "
            "them (bound to its nodes, or not created when it found no rack)"
        )
    lines = [
        f"{name} vs {chk['simulated']}: counts {'identical' if chk['counts_identical'] else 'DIFFER'}; "
        f"pods on the same node {chk['same_node']}/{n}, bound-or-refused as simulated "
        f"{chk['same_fate']}/{n}; {scored}; seconds from create to bound/Unschedulable: "
        f"mean {waits['mean']}, max {waits['max']}",
    ]
    lines += [f"  deviates: {d}" for d in (chk["deviations"] + chk["group_deviations"])[:10]]
    return lines


def kwok_table(report: dict[str, Any]) -> str:
    d = report["cluster"]
    racks = len(set(report["nodes"].values()))
    groups = ", ".join(f"{v} of {k}" for k, v in d["groups_by_pods"].items()) or "none"
    singles = ", ".join(f"{v} of {k}" for k, v in d["singles_by_gpus"].items())
    width = max(len(arm) for arm in report["arms"])
    lines = [
        f"== KWOK, kube-scheduler {report['kube_version']}: {len(report['nodes'])} H100 nodes in {racks} "
        f"racks, {d['instances']} instances (summed): {d['pre_taken_gpus']} of {d['gpus']} GPUs taken by "
        f"{d['pre_bound_pods']} pods before, {d['free_gpus']} free",
        f"   arrivals: {d['replicas']} replicas asking {d['gpus_offered']} GPUs (single pods by GPUs: "
        f"{singles}; groups: {groups})",
        f"   {REAL} = every pod by the default profile; {REAL_BINPACK} = single pods by the "
        f"{BINPACK_SCHEDULER} profile, groups planned by plan_group_placement and pinned",
        f"{'arm':<{width}} {'placed':>6} {'single':>6} {'groups':>6} {'partial':>7} {'serving':>7} "
        f"{'stranded (held+free)':>20}",
    ]
    for arm, m in report["arms"].items():
        stranded = f"{m['stranded_gpus']} ({m['gpus_held_by_partial_groups']}+{m['stranded_free_gpus']})"
        lines.append(
            f"{arm:<{width}} {m['replicas_placed']:>6} {m['singles_placed']:>6} {m['groups_placed']:>6} "
            f"{m['partial_groups']:>7} {m['gpus_serving']:>7} {stranded:>20}"
        )
    for name, chk in report["checks"].items():
        lines += _check_lines(name, chk)
    lines.append("(the real scheduler breaks score ties at random, the simulation by name)")
    probe = report.get("binpack_probe")
    if probe:
        used = ", ".join(
            f"{n}: {g} GPUs + cpu/memory of {c}"
            for n, (g, c) in probe["used_gpus_and_cpu_memory_shares"].items()
        )
        lines.append(
            f"{BINPACK_SCHEDULER} scores nvidia.com/gpu only: {'YES' if probe['gpu_only_holds'] else 'NO'} "
            f"(probe: {used} taken; a 1-GPU pod went to {probe['node']}; top by gpu alone "
            f"{probe['top_gpu_only']} {probe['scores']['gpu_only']}, by gpu+cpu+memory "
            f"{probe['top_gpu_cpu_memory']} {probe['scores']['gpu_cpu_memory']})"
        )
    lines.append(f"wall time {report['wall_seconds']:.0f} s (cluster creation included)")
    return "\n".join(lines)
