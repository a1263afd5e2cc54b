from pathlib import Path
from typing import Any

import pytest
import yaml

from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.api.reserved import GENERATED_FLAGS, OPERATOR_ENV_NAMES, OPERATOR_PORTS, overridden_flag
from inferfleet.planning.children import Owner
from inferfleet.planning.engines import (
    DEFAULT_IMAGES,
    build_engine_container,
    build_engine_volumes,
)
from inferfleet.planning.groups import build_group_headless_service, build_group_statefulset
from inferfleet.planning.placement import GroupPlacement
from tests.support import RESTRICTED_SECURITY_CONTEXT

EXAMPLES = Path(__file__).parents[2] / "examples"


def shards(tp: int, pp: int, gpus_per_pod: int, pods: int = 1) -> ShardPlan:
    return ShardPlan(
        tensor_parallel=tp, pipeline_parallel=pp, gpus_per_pod=gpus_per_pod, pods_per_replica=pods
    )


def spec_with(**changes: Any) -> InferenceServiceSpec:
    raw: dict[str, Any] = {
        "model": {"name": "m", "source": "hf://org/model", "parametersBillions": 8, "maxModelLen": 4096},
        "engine": {"kind": "vllm"},
        "accelerator": {"product": "NVIDIA-H100-80GB-HBM3"},
    }
    for path, value in changes.items():
        section, field = path.split("__")
        raw.setdefault(section, {})[field] = value
    return InferenceServiceSpec.model_validate(raw)


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vllm_from_the_8b_example() -> None:
    raw = yaml.safe_load((EXAMPLES / "llama-3.1-8b-vllm.yaml").read_text())
    spec = InferenceServiceSpec.model_validate(raw["spec"])
    c = build_engine_container(spec, shards(1, 1, 1))
    args = c["args"]
    assert c["image"] == "vllm/vllm-openai:v0.11.0"
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(args, "--model") == "meta-llama/Llama-3.1-8B-Instruct"
    assert flag(args, "--served-model-name") == "llama-3.1-8b-instruct"
    assert flag(args, "--tensor-parallel-size") == "1"
    assert flag(args, "--pipeline-parallel-size") == "1"
    assert flag(args, "--max-num-seqs") == "64"
    assert flag(args, "--max-model-len") == "8192"
    assert flag(args, "--dtype") == "bfloat16"
    assert flag(args, "--port") == "8000"
    assert "--enable-prefix-caching" in args
    assert c["resources"] == {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    assert {"name": "HF_HOME", "value": "/models/hf"} in c["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in c[
        "env"
    ]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("vllm", {"--tensor-parallel-size": "4", "--pipeline-parallel-size": "2", "--max-num-seqs": "128"}),
        (
            "sglang",
            {
                "--tp-size": "4",
                "--pp-size": "2",
                "--max-running-requests": "128",
                "--model-path": "org/model",
            },
        ),
        ("tgi", {"--num-shard": "4", "--max-concurrent-requests": "128", "--max-total-tokens": "4096"}),
    ],
)
def test_each_engine_gets_parallelism_and_concurrency_in_its_own_flags(
    kind: str, expected: dict[str, str]
) -> None:
    spec = spec_with(engine__kind=kind, engine__maxConcurrentRequests=128)
    c = build_engine_container(spec, shards(4, 2, 4))
    assert c["image"] == DEFAULT_IMAGES[spec.engine.kind]
    assert {name: flag(c["args"], name) for name in expected} == expected


@pytest.mark.parametrize(
    ("kind", "args_flag", "env"),
    [
        ("vllm", "--no-enable-prefix-caching", None),
        ("sglang", "--disable-radix-cache", None),
        ("tgi", None, {"name": "PREFIX_CACHING", "value": "0"}),
    ],
)
def test_prefix_caching_off(kind: str, args_flag: str | None, env: dict | None) -> None:
    c = build_engine_container(
        spec_with(engine__kind=kind, engine__enablePrefixCaching=False), shards(1, 1, 1)
    )
    if args_flag:
        assert args_flag in c["args"]
    if env:
        assert env in c["env"]


def test_fp8_asks_the_engine_for_fp8_quantization() -> None:
    c = build_engine_container(spec_with(model__dtype="fp8"), shards(1, 1, 1))
    assert flag(c["args"], "--quantization") == "fp8"
    assert "--dtype" not in c["args"]


def test_user_args_come_after_the_generated_ones() -> None:
    user = ["--gpu-memory-utilization", "0.85"]
    c = build_engine_container(spec_with(engine__args=user), shards(1, 1, 1))
    assert c["args"][-2:] == user


# Specs that make the engine presets generate every optional flag and variable between them.
VARIANTS = [
    {},
    {"model__dtype": "fp8", "engine__enablePrefixCaching": False},
    {"model__source": "s3://bucket/model", "model__dtype": "float16"},
    {"model__source": "pvc://claim/llama", "model__dtype": "int4"},
]


def generated_flags(container: dict[str, Any]) -> set[str]:
    return {a for a in container["args"] if a.startswith("-")}


@pytest.mark.parametrize("kind", ["vllm", "sglang", "tgi"])
@pytest.mark.parametrize("variant", VARIANTS, ids=range(len(VARIANTS)))
def test_every_flag_an_engine_preset_generates_is_one_the_api_refuses_in_args(
    kind: str, variant: dict[str, Any]
) -> None:
    spec = spec_with(engine__kind=kind, **variant)
    c = build_engine_container(spec, shards(2, 1, 2))
    # --quantization/--quantize (fp8 only), --load-format (s3/gs only) and --enable-metrics stay
    # open to users: an int4 AWQ checkpoint may need its quantization named.
    allowed = {"--quantization", "--quantize", "--load-format", "--enable-metrics"}
    assert generated_flags(c) - allowed <= set(GENERATED_FLAGS[kind])
    assert {e["name"] for e in c["env"]} <= set(OPERATOR_ENV_NAMES)


@pytest.mark.parametrize("kind", ["vllm", "sglang"])
def test_every_flag_variable_and_port_of_a_multi_node_group_is_reserved(kind: str) -> None:
    spec = spec_with(engine__kind=kind)
    owner = Owner(name="svc", namespace="ml", uid="u")
    sts = build_group_statefulset(
        owner, spec, shards(8, 2, 8, pods=2), 0, GroupPlacement("zone-a", ("n1", "n2"))
    )
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert generated_flags(container) - {"--enable-metrics"} <= set(GENERATED_FLAGS[kind])
    assert {e["name"] for e in container["env"]} <= set(OPERATOR_ENV_NAMES)
    headless = build_group_headless_service(owner, spec, 0)
    ports = {p["port"] for p in headless["spec"]["ports"]} - {spec.engine.port}
    assert ports == {OPERATOR_PORTS[kind]}


@pytest.mark.parametrize(
    ("kind", "args", "flag"),
    [
        ("vllm", ["--tensor-parallel-size", "8"], "--tensor-parallel-size"),
        ("vllm", ["--tensor_parallel_size=8"], "--tensor-parallel-size"),
        ("vllm", ["--trust-remote-code", "--port=9000"], "--port"),
        ("sglang", ["--tp-size", "4"], "--tp-size"),
        ("tgi", ["--num-shard", "4"], "--num-shard"),
        ("vllm", ["--gpu-memory-utilization", "0.8"], None),
        ("vllm", ["--model-loader-extra-config={}"], None),
        ("tgi", ["--tp-size", "4"], None),
    ],
)
def test_overridden_flag_reads_flags_as_the_crd_rule_does(
    kind: str, args: list[str], flag: str | None
) -> None:
    assert overridden_flag(kind, args) == flag


def test_custom_engine_runs_its_own_image_and_args_with_tcp_probes() -> None:
    spec = spec_with(engine__kind="custom", engine__image="example/engine:1", engine__args=["serve"])
    c = build_engine_container(spec, shards(2, 1, 2))
    assert c["image"] == "example/engine:1"
    assert c["args"] == ["serve"]
    assert "command" not in c
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}


def test_probes_allow_a_long_model_load_before_liveness_counts() -> None:
    c = build_engine_container(spec_with(), shards(1, 1, 1))
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_a_pvc_source_is_mounted_read_only_and_loaded_from_its_path() -> None:
    spec = spec_with(model__source="pvc://models/llama/8b")
    c = build_engine_container(spec, shards(1, 1, 1))
    assert flag(c["args"], "--model") == "/models/pvc/llama/8b"
    assert {"name": "model", "mountPath": "/models/pvc", "readOnly": True} in c["volumeMounts"]
    volumes = build_engine_volumes(spec, shards(1, 1, 1))
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in volumes


def test_shared_memory_is_memory_backed_and_grows_with_gpus() -> None:
    [dshm] = [v for v in build_engine_volumes(spec_with(), shards(8, 1, 8)) if v["name"] == "dshm"]
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


@pytest.mark.parametrize("kind", ["vllm", "sglang", "tgi"])
def test_the_engine_container_carries_the_security_context_the_spec_gives(kind: str) -> None:
    spec = spec_with(engine__kind=kind, engine__securityContext=RESTRICTED_SECURITY_CONTEXT)
    c = build_engine_container(spec, shards(1, 1, 1))
    assert c["securityContext"] == RESTRICTED_SECURITY_CONTEXT


def test_without_a_security_context_the_images_defaults_apply() -> None:
    c = build_engine_container(spec_with(), shards(1, 1, 1))
    assert "securityContext" not in c


@pytest.mark.parametrize(
    ("profile", "valid"),
    [
        ({"type": "RuntimeDefault"}, True),
        ({"type": "Localhost", "localhostProfile": "profiles/engine.json"}, True),
        ({"type": "Localhost"}, False),
        ({"type": "RuntimeDefault", "localhostProfile": "profiles/engine.json"}, False),
    ],
)
def test_a_localhost_profile_is_named_exactly_when_the_seccomp_type_is_localhost(
    profile: dict[str, str], valid: bool
) -> None:
    if valid:
        spec_with(engine__securityContext={"seccompProfile": profile})
    else:
        with pytest.raises(ValueError, match="localhostProfile is set exactly when type is Localhost"):
            spec_with(engine__securityContext={"seccompProfile": profile})
