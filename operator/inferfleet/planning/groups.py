"""The Kubernetes objects of a multi-node replica group: one replica of a model too big for one node.

As in LeaderWorkerSet, a group is one StatefulSet (one pod per node, rank 0 the leader) plus a
headless Service through which the ranks find each other. Only the leader serves HTTP.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

from inferfleet.api import EngineKind, InferenceServiceSpec, ShardPlan
from inferfleet.api.reserved import RAY_PORT, SGLANG_DIST_PORT
from inferfleet.planning.children import Owner, build_pod_spec, build_service, owner_reference
from inferfleet.planning.engines import build_engine_container
from inferfleet.planning.names import HOSTNAME_LABEL, REPLICA_LABEL, SERVICE_LABEL, child_labels
from inferfleet.planning.placement import GroupPlacement

MULTI_NODE_ENGINES: frozenset[EngineKind] = frozenset({EngineKind.VLLM, EngineKind.SGLANG})
TGI_NOT_MULTI_NODE = "tgi does not support multi-node serving; use vllm or sglang"

# Set by the StatefulSet controller on Kubernetes >= 1.28.
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
PLACEMENT_DOMAIN_ANNOTATION = "inferfleet.io/placement-domain"
PLACEMENT_NODES_ANNOTATION = "inferfleet.io/placement-nodes"

RAY_JOIN_TIMEOUT_SECONDS = 600

# The controller labels each pod controller-revision-hash=<name>-<10-char hash>, and a label value
# is at most 63 characters: longer StatefulSet names create pods that fail validation.
MAX_GROUP_NAME = 52


def group_name(service: str, replica: int) -> str:
    suffix = f"-g{replica}"
    name = service + suffix
    if len(name) <= MAX_GROUP_NAME:
        return name
    digest = hashlib.sha256(service.encode()).hexdigest()[:8]
    return f"{service[: MAX_GROUP_NAME - len(suffix) - len(digest) - 1]}-{digest}{suffix}"


def group_key(namespace: str, service: str, replica: int) -> str:
    return f"{namespace}/{service}/{replica}"


def group_selector(service: str, replica: int) -> dict[str, str]:
    return {SERVICE_LABEL: service, REPLICA_LABEL: str(replica)}


def leader_address(namespace: str, service: str, replica: int) -> str:
    """The stable DNS name of rank 0, through the group's headless Service."""
    name = group_name(service, replica)
    return f"{name}-0.{name}.{namespace}.svc.cluster.local"


def _generated_args(spec: InferenceServiceSpec, shards: ShardPlan) -> tuple[list[str], list[str]]:
    """The engine's usual flags, split from the user's extra args (which must stay last to win)."""
    args: list[str] = build_engine_container(spec, shards)["args"]
    extra = len(spec.engine.args)
    return args[: len(args) - extra], args[len(args) - extra :]


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def _vllm_script(pods: int, leader_host: str) -> str:
    count_nodes = (
        'python3 -c \'import ray; ray.init(address="auto", logging_level="error"); '
        'print(sum(n["Alive"] for n in ray.nodes()))\''
    )
    head = f"{shlex.quote(leader_host)}:{RAY_PORT}"
    # vLLM spreads the pipeline stages over the Ray nodes it sees at start: wait for every rank.
    return f"""\
if [ "$POD_INDEX" = 0 ]; then
  ray start --head --port={RAY_PORT}
  deadline=$(( $(date +%s) + {RAY_JOIN_TIMEOUT_SECONDS} ))
  until [ "$({count_nodes})" -ge {pods} ] 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out waiting for {pods} Ray nodes" >&2
      exit 1
    fi
    sleep 5
  done
  exec python3 -m vllm.entrypoints.openai.api_server "$@"
else
  exec ray start --address={head} --block
fi
"""


def build_multinode_command(
    spec: InferenceServiceSpec, shards: ShardPlan, leader_host: str
) -> tuple[list[str], list[str]]:
    """(command, args) of the engine container of every rank of a replica split as `shards` plans
    (one pod per pipeline stage); the script branches on $POD_INDEX.

    The engine flags are passed as the script's positional parameters ("$@"), so user args need
    no shell quoting.
    """
    kind, pods = spec.engine.kind, shards.pods_per_replica
    if kind == EngineKind.TGI:
        raise ValueError(TGI_NOT_MULTI_NODE)
    generated, user = _generated_args(spec, shards)
    if kind == EngineKind.VLLM:
        script = _vllm_script(pods, leader_host)
        args = [*generated, "--distributed-executor-backend", "ray", *user]
    elif kind == EngineKind.SGLANG:
        # SGLang shards one tensor-parallel group over all GPUs of all nodes.
        generated = _set_flag(generated, "--tp-size", str(shards.tensor_parallel * pods))
        generated = _set_flag(generated, "--pp-size", "1")
        script = 'exec python3 -m sglang.launch_server --node-rank "$POD_INDEX" "$@"\n'
        dist = ["--nnodes", str(pods), "--dist-init-addr", f"{leader_host}:{SGLANG_DIST_PORT}"]
        args = [*generated, *dist, *user]
    else:
        raise ValueError(f"{kind.value} keeps its own command; it has no multi-node preset")
    return ["sh", "-c", script, "inferfleet"], args


def _leader_only_probe(probe: dict[str, Any], port: int) -> dict[str, Any]:
    """The engine's probe, answered by rank 0's /health; the workers serve no HTTP and pass.

    python3 rather than curl: every vLLM and SGLang image has it.
    """
    check = (
        "import os, urllib.request as r; "
        f"os.environ.get('POD_INDEX') != '0' or r.urlopen('http://127.0.0.1:{port}/health', timeout=4)"
    )
    kept = {k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket", "exec")}
    return {"exec": {"command": ["python3", "-c", check]}, **kept}


def _affinity(service: str, replica: int, topology_key: str, placement: GroupPlacement) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": HOSTNAME_LABEL, "operator": "In", "values": list(placement.nodes)},
                            {"key": topology_key, "operator": "In", "values": [placement.domain]},
                        ]
                    }
                ]
            }
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": group_selector(service, replica)},
                    "topologyKey": HOSTNAME_LABEL,
                }
            ]
        },
    }


def _group_pod(spec: InferenceServiceSpec, shards: ShardPlan, service: str, leader: str) -> dict[str, Any]:
    """The pod template of every rank: told its rank, its leader and the group size."""
    pod = build_pod_spec(spec, shards, service)
    pod.pop("topologySpreadConstraints")  # a group is packed into one domain, not spread
    engine = pod["containers"][0]
    engine["env"] = [
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
        },
        {"name": "LEADER_ADDRESS", "value": leader},
        {"name": "GROUP_SIZE", "value": str(shards.pods_per_replica)},
        *engine["env"],
    ]
    # A custom image keeps its entrypoint, args and probes: its ranks are its own business.
    if spec.engine.kind in MULTI_NODE_ENGINES:
        engine["command"], engine["args"] = build_multinode_command(spec, shards, leader)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            engine[probe] = _leader_only_probe(engine[probe], spec.engine.port)
    return pod


def build_group_statefulset(
    owner: Owner, spec: InferenceServiceSpec, shards: ShardPlan, replica: int, placement: GroupPlacement
) -> dict[str, Any]:
    """Replica group `replica`: one pod per pipeline stage of `shards`, on the nodes of `placement`."""
    kind, pods = spec.engine.kind, shards.pods_per_replica
    if kind == EngineKind.TGI:
        raise ValueError(TGI_NOT_MULTI_NODE)
    service, name = owner.name, group_name(owner.name, replica)
    pod = _group_pod(spec, shards, service, leader_address(owner.namespace, service, replica))
    pod["affinity"] = _affinity(service, replica, spec.sharding.topology_key, placement)
    selector = group_selector(service, replica)
    labels = {**child_labels(service, kind.value), **selector}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "replicas": pods,
            "serviceName": name,
            # All ranks start together: the leader waits for the workers, which wait for the leader.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            # Ranks cannot be upgraded one at a time (they must agree on the engine and the model):
            # the operator replaces the whole group when its template or placement changes.
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": labels,
                    # Part of the template, so a changed placement rolls the group.
                    "annotations": {
                        PLACEMENT_DOMAIN_ANNOTATION: placement.domain,
                        PLACEMENT_NODES_ANNOTATION: ",".join(placement.nodes),
                    },
                },
                "spec": pod,
            },
        },
    }


def build_group_headless_service(owner: Owner, spec: InferenceServiceSpec, replica: int) -> dict[str, Any]:
    ports = [{"name": "http", "port": spec.engine.port, "targetPort": spec.engine.port, "protocol": "TCP"}]
    if spec.engine.kind == EngineKind.VLLM:
        ports.append({"name": "ray", "port": RAY_PORT, "targetPort": RAY_PORT, "protocol": "TCP"})
    elif spec.engine.kind == EngineKind.SGLANG:
        ports.append(
            {"name": "dist", "port": SGLANG_DIST_PORT, "targetPort": SGLANG_DIST_PORT, "protocol": "TCP"}
        )
    selector = group_selector(owner.name, replica)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": group_name(owner.name, replica),
            "namespace": owner.namespace,
            "labels": {**child_labels(owner.name, spec.engine.kind.value), **selector},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "clusterIP": "None",
            # Ranks must resolve each other before any of them is ready.
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": ports,
        },
    }


def build_group_user_service(owner: Owner, spec: InferenceServiceSpec) -> dict[str, Any]:
    """The service's client endpoint when its replicas are groups: the leaders only.

    Workers carry the service label too but serve no HTTP; pods of one StatefulSet share one
    template, so rank 0 is told apart by the controller's pod-index label.
    """
    svc = build_service(owner, spec)
    svc["spec"]["selector"] = {SERVICE_LABEL: owner.name, POD_INDEX_LABEL: "0"}
    return svc
