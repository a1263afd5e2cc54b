from pathlib import Path
from typing import Any

import pytest
import yaml

from inferfleet.api import EngineKind, InferenceServiceSpec, ShardPlan
from inferfleet.planning.children import Owner
from inferfleet.planning.engines import STARTUP_FAILURE_THRESHOLD, STARTUP_PERIOD_SECONDS
from inferfleet.planning.groups import (
    MULTI_NODE_ENGINES,
    build_group_headless_service,
    build_group_statefulset,
    build_group_user_service,
    build_multinode_command,
    group_key,
    group_name,
)
from inferfleet.planning.placement import GroupPlacement

EXAMPLES = Path(__file__).parents[2] / "examples"
OWNER = Owner(name="llama-3-1-405b", namespace="ml", uid="uid-1")
PAR = ShardPlan(tensor_parallel=8, pipeline_parallel=2, gpus_per_pod=8, pods_per_replica=2)
NODES = ("gpu-a", "gpu-b")
LEADER = "llama-3-1-405b-g1-0.llama-3-1-405b-g1.ml.svc.cluster.local"


def spec(kind: str = "vllm", **engine: Any) -> InferenceServiceSpec:
    raw = yaml.safe_load((EXAMPLES / "llama-3.1-405b-vllm.yaml").read_text())["spec"]
    raw["engine"] = {**raw["engine"], "kind": kind, **engine}
    if kind != "vllm" and "image" not in engine:
        del raw["engine"]["image"]
    return InferenceServiceSpec.model_validate(raw)


def statefulset(s: InferenceServiceSpec | None = None) -> dict[str, Any]:
    return build_group_statefulset(OWNER, s or spec(), PAR, 1, GroupPlacement("rack-7", NODES))


def engine_container(sts: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_statefulset_is_one_owned_parallel_group_of_pods() -> None:
    sts = statefulset()
    meta, body = sts["metadata"], sts["spec"]
    assert (sts["kind"], meta["name"], meta["namespace"]) == ("StatefulSet", "llama-3-1-405b-g1", "ml")
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["labels"]["inferfleet.io/replica"] == "1"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "inferfleet"
    assert body["replicas"] == 2
    assert body["podManagementPolicy"] == "Parallel"
    assert body["serviceName"] == "llama-3-1-405b-g1"
    selector = {"inferfleet.io/service": "llama-3-1-405b", "inferfleet.io/replica": "1"}
    assert body["selector"] == {"matchLabels": selector}
    assert selector.items() <= body["template"]["metadata"]["labels"].items()
    assert body["template"]["metadata"]["annotations"] == {
        "inferfleet.io/placement-domain": "rack-7",
        "inferfleet.io/placement-nodes": "gpu-a,gpu-b",
    }


def test_each_pod_holds_a_node_of_the_chosen_domain() -> None:
    sts = statefulset()
    pod = sts["spec"]["template"]["spec"]
    assert engine_container(sts)["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert "topologySpreadConstraints" not in pod
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # One term: its expressions are ANDed (separate terms would be ORed).
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-a", "gpu-b"]},
                {"key": "inferfleet.io/rack", "operator": "In", "values": ["rack-7"]},
            ]
        }
    ]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "labelSelector": {
                "matchLabels": {"inferfleet.io/service": "llama-3-1-405b", "inferfleet.io/replica": "1"}
            },
            "topologyKey": "kubernetes.io/hostname",
        }
    ]


def test_ranks_learn_their_index_the_leader_and_the_group_size() -> None:
    env = engine_container(statefulset())["env"]
    assert env[:3] == [
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
        },
        {"name": "LEADER_ADDRESS", "value": LEADER},
        {"name": "GROUP_SIZE", "value": "2"},
    ]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in env


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_probes_check_the_leader_and_pass_on_workers(kind: str) -> None:
    container = engine_container(statefulset(spec(kind)))
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[name]
        assert "httpGet" not in probe
        command = probe["exec"]["command"]
        assert command[:2] == ["python3", "-c"]
        assert "POD_INDEX" in command[2]
        assert "http://127.0.0.1:8000/health" in command[2]
    startup = container["startupProbe"]
    assert (startup["periodSeconds"], startup["failureThreshold"]) == (
        STARTUP_PERIOD_SECONDS,
        STARTUP_FAILURE_THRESHOLD,
    )


def test_vllm_leader_heads_a_ray_cluster_the_workers_join() -> None:
    command, args = build_multinode_command(spec(), PAR, LEADER)
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    assert "ray start --head --port=6379" in script
    assert "-ge 2 ]" in script
    assert 'exec python3 -m vllm.entrypoints.openai.api_server "$@"' in script
    assert f"exec ray start --address={LEADER}:6379 --block" in script
    assert flag(args, "--tensor-parallel-size") == "8"
    assert flag(args, "--pipeline-parallel-size") == "2"
    assert flag(args, "--distributed-executor-backend") == "ray"
    assert flag(args, "--served-model-name") == "llama-3.1-405b-instruct"


def test_sglang_ranks_share_one_tensor_parallel_group() -> None:
    command, args = build_multinode_command(spec("sglang"), PAR, LEADER)
    assert command[:2] == ["sh", "-c"]
    assert '--node-rank "$POD_INDEX"' in command[2]
    assert flag(args, "--tp-size") == "16"
    assert flag(args, "--pp-size") == "1"
    assert flag(args, "--nnodes") == "2"
    assert flag(args, "--dist-init-addr") == f"{LEADER}:5000"


def test_user_args_stay_last_to_tune_the_engine() -> None:
    _, args = build_multinode_command(spec(args=["--gpu-memory-utilization", "0.85"]), PAR, LEADER)
    assert args[-2:] == ["--gpu-memory-utilization", "0.85"]
    assert "--distributed-executor-backend" in args[:-2]


def test_tgi_cannot_serve_across_nodes() -> None:
    assert EngineKind.TGI not in MULTI_NODE_ENGINES
    with pytest.raises(ValueError, match="tgi does not support multi-node serving; use vllm or sglang"):
        statefulset(spec("tgi"))


def test_custom_engine_keeps_its_command_and_gets_env_and_placement() -> None:
    custom = spec("custom", image="example.com/engine:1", args=["--serve"])
    container = engine_container(statefulset(custom))
    assert "command" not in container
    assert container["args"] == ["--serve"]
    assert container["env"][2] == {"name": "GROUP_SIZE", "value": "2"}
    assert "tcpSocket" in container["readinessProbe"]


@pytest.mark.parametrize(
    ("service", "replica", "expected"),
    [
        ("llama", 0, "llama-g0"),
        ("llama", 12, "llama-g12"),
        ("x" * 49, 1, "x" * 49 + "-g1"),
    ],
)
def test_group_name_is_service_and_replica(service: str, replica: int, expected: str) -> None:
    assert group_name(service, replica) == expected


def test_long_group_names_are_truncated_and_stay_unique() -> None:
    service = "a" * 60
    names = {group_name(service, r) for r in range(12)}
    assert len(names) == 12
    assert all(len(n) <= 52 for n in names)  # StatefulSet limit: revision-hash label <= 63
    assert group_name(service, 3) != group_name("a" * 59 + "b", 3)
    assert group_name(service, 3).endswith("-g3")


def test_group_key() -> None:
    assert group_key("ml", "llama", 2) == "ml/llama/2"


@pytest.mark.parametrize(("kind", "port"), [("vllm", ("ray", 6379)), ("sglang", ("dist", 5000))])
def test_headless_service_publishes_ranks_before_they_are_ready(kind: str, port: tuple[str, int]) -> None:
    svc = build_group_headless_service(OWNER, spec(kind), 1)
    assert svc["metadata"]["name"] == "llama-3-1-405b-g1"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    body = svc["spec"]
    assert body["clusterIP"] == "None"
    assert body["publishNotReadyAddresses"] is True
    assert body["selector"] == {"inferfleet.io/service": "llama-3-1-405b", "inferfleet.io/replica": "1"}
    assert [(p["name"], p["port"]) for p in body["ports"]] == [("http", 8000), port]


def test_user_service_selects_only_the_leaders() -> None:
    svc = build_group_user_service(OWNER, spec())
    assert svc["metadata"]["name"] == "llama-3-1-405b"
    assert svc["spec"]["selector"] == {
        "inferfleet.io/service": "llama-3-1-405b",
        "apps.kubernetes.io/pod-index": "0",
    }
