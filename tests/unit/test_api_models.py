"""The InferenceService pydantic models: parsing, defaults and the cross-field rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from inferfleet.api import (
    API_VERSION,
    KIND,
    Dtype,
    EngineKind,
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
    Phase,
    ShardingMode,
    ShardPlan,
    parse_inference_service,
)
from tests.integration.test_bad_input_and_quiet import REJECTED
from tests.integration.test_bad_input_and_quiet import with_changes as cluster_body

EXAMPLES = Path(__file__).parents[2] / "examples"

# The spec of DESIGN.md's example, as written there (nulls included).
DESIGN_SPEC: dict[str, Any] = yaml.safe_load("""
model:
  name: llama-3.1-70b-instruct
  source: hf://meta-llama/Llama-3.1-70B-Instruct
  parametersBillions: 70.6
  dtype: bfloat16
  architecture: {numLayers: 80, hiddenSize: 8192, numAttentionHeads: 64, numKeyValueHeads: 8}
  maxModelLen: 8192
engine:
  kind: vllm
  image: vllm/vllm-openai:v0.11.0
  args: []
  env: []
  port: 8000
  maxConcurrentRequests: 256
  enablePrefixCaching: true
accelerator:
  resourceName: nvidia.com/gpu
  product: NVIDIA-H100-80GB-HBM3
  memoryGiB: 80
  gpusPerNode: 8
sharding:
  mode: auto
  tensorParallel: null
  pipelineParallel: null
  topologyKey: topology.kubernetes.io/zone
scaling:
  minReplicas: 1
  maxReplicas: 8
  targetQueueDepth: 4
  query: null
  scaleUpStabilizationSeconds: 0
  scaleDownStabilizationSeconds: 300
  scaleToZeroAfterSeconds: null
replicas: 1
""")

MINIMAL_SPEC: dict[str, Any] = {
    "model": {"name": "m", "source": "hf://org/m", "parametersBillions": 8},
    "engine": {"kind": "vllm"},
    "accelerator": {"product": "NVIDIA-L4"},
}


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """base with `changes` set by dotted path ("sharding.mode"); None deletes the key."""
    spec = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


def rule_failures(error: ValidationError) -> set[tuple[tuple[str | int, ...], str]]:
    """(location, message) of each failed cross-field rule."""
    return {
        (tuple(err["loc"]), message)
        for err in error.errors()
        if err["type"] == "value_error"
        for message in str(err["ctx"]["error"]).split("; ")
    }


def test_design_example_parses_with_its_values() -> None:
    spec = InferenceServiceSpec.model_validate(DESIGN_SPEC)
    assert spec.model.name == "llama-3.1-70b-instruct"
    assert spec.model.parameters_billions == 70.6
    assert spec.model.dtype is Dtype.BFLOAT16
    assert spec.model.architecture is not None
    assert spec.model.architecture.num_key_value_heads == 8
    assert spec.model.max_model_len == 8192
    assert spec.engine.kind is EngineKind.VLLM
    assert spec.engine.image == "vllm/vllm-openai:v0.11.0"
    assert spec.accelerator.memory_gib == 80
    assert spec.accelerator.gpus_per_node == 8
    assert spec.sharding.mode is ShardingMode.AUTO
    assert spec.sharding.tensor_parallel is None
    assert spec.scaling is not None
    assert spec.scaling.max_replicas == 8
    assert spec.scaling.scale_to_zero_after_seconds is None
    assert spec.replicas == 1


def test_a_model_needs_only_a_name_and_a_source() -> None:
    spec = InferenceServiceSpec.model_validate(
        with_changes(MINIMAL_SPEC, {"model": {"name": "m", "source": "hf://Qwen/Qwen3-8B"}})
    )
    assert (spec.model.parameters_billions, spec.model.architecture) == (None, None)


def test_a_status_with_model_facts_round_trips_and_a_misspelt_source_is_refused() -> None:
    model = {
        "source": "KnownModels",
        "knownModel": "Qwen/Qwen3-8B",
        "parameters": 8_190_735_360,
        "dtype": "bfloat16",
        "architecture": {"numLayers": 36, "hiddenSize": 4096, "numAttentionHeads": 32},
    }
    status = InferenceServiceStatus.read({"model": model})
    assert status.dump() == {"conditions": [], "model": model}
    with pytest.raises(ValidationError):
        InferenceServiceStatus.model_validate({"model": {**model, "source": "Table"}})


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = InferenceServiceSpec.model_validate(MINIMAL_SPEC)
    assert spec.model.dtype is Dtype.BFLOAT16
    assert spec.model.architecture is None
    assert spec.model.max_model_len is None
    assert (spec.engine.image, spec.engine.args, spec.engine.env) == (None, [], [])
    assert spec.engine.port == 8000
    assert spec.engine.max_concurrent_requests == 256
    assert spec.engine.enable_prefix_caching is True
    assert spec.accelerator.resource_name == "nvidia.com/gpu"
    assert (spec.accelerator.memory_gib, spec.accelerator.gpus_per_node) == (None, None)
    assert spec.sharding.mode is ShardingMode.AUTO
    assert spec.sharding.topology_key == "topology.kubernetes.io/zone"
    assert spec.scaling is None
    assert spec.replicas == 1


def test_scaling_defaults_when_present() -> None:
    spec = InferenceServiceSpec.model_validate({**MINIMAL_SPEC, "scaling": {}})
    assert spec.scaling is not None
    assert spec.scaling.model_dump() == {
        "minReplicas": 1,
        "maxReplicas": 8,
        "targetQueueDepth": 4,
        "query": None,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 300,
        "scaleToZeroAfterSeconds": None,
        "activationTimeoutSeconds": 300,
    }


def test_gateway_queue_defaults_when_absent() -> None:
    spec = InferenceServiceSpec.model_validate(MINIMAL_SPEC)
    assert spec.gateway.model_dump() == {"maxQueuedRequests": 1000, "queueTimeoutSeconds": 60}


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        pytest.param({"engine.port": None}, ("engine", "port"), 8000, id="port"),
        pytest.param({"replicas": None}, ("replicas",), 1, id="replicas"),
        pytest.param({"model.dtype": None}, ("model", "dtype"), Dtype.BFLOAT16, id="dtype"),
        pytest.param({"sharding": None}, ("sharding", "mode"), ShardingMode.AUTO, id="sharding"),
        pytest.param({"engine.args": None}, ("engine", "args"), [], id="args"),
    ],
)
def test_explicit_null_means_default_as_in_the_api_server(
    changes: dict[str, Any], attribute: tuple[str, ...], expected: object
) -> None:
    spec_dict = copy.deepcopy(MINIMAL_SPEC)
    for path in changes:
        *parents, leaf = path.split(".")
        node = spec_dict
        for part in parents:
            node = node[part]
        node[leaf] = None
    value: object = InferenceServiceSpec.model_validate(spec_dict)
    for name in attribute:
        value = getattr(value, name)
    assert value == expected


def test_snake_case_names_are_accepted_and_dumps_are_camel_case() -> None:
    spec = InferenceServiceSpec.model_validate(
        with_changes(MINIMAL_SPEC, {"model.parametersBillions": None, "model.parameters_billions": 8})
    )
    dumped = spec.model_dump(exclude_none=True)
    assert dumped["model"]["parametersBillions"] == 8
    assert dumped["accelerator"] == {"resourceName": "nvidia.com/gpu", "product": "NVIDIA-L4"}


SCALING, SHARDING, ENGINE, ARCHITECTURE = ("scaling",), ("sharding",), ("engine",), ("model", "architecture")
SPEC, ENV0, ENV1, SCHEDULING = (), ("engine", "env", 0), ("engine", "env", 1), ("scheduling",)
SECRET = {"secretKeyRef": {"name": "hf", "key": "token"}}
ARCH_12_HEADS = {"numLayers": 12, "hiddenSize": 768, "numAttentionHeads": 12, "numKeyValueHeads": 4}


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        pytest.param(
            {"scaling": {"minReplicas": 5, "maxReplicas": 4}},
            SCALING,
            "minReplicas must be less than or equal to maxReplicas",
            id="min-above-max",
        ),
        pytest.param(
            {"scaling": {"minReplicas": 9}},
            SCALING,
            "minReplicas must be less than or equal to maxReplicas",
            id="min-above-default-max",
        ),
        pytest.param(
            {"sharding": {"mode": "manual"}},
            SHARDING,
            "tensorParallel is required in manual mode",
            id="manual-without-tp",
        ),
        pytest.param(
            {"sharding": {"mode": "manual", "pipelineParallel": 2}},
            SHARDING,
            "tensorParallel is required in manual mode",
            id="manual-with-pp-only",
        ),
        pytest.param(
            {"sharding": {"mode": "manual", "tensorParallel": 3}},
            SHARDING,
            "tensorParallel must be a power of two",
            id="tp-not-power-of-two",
        ),
        pytest.param(
            {"sharding": {"tensorParallel": 4}},
            SHARDING,
            "tensorParallel and pipelineParallel are set only in manual mode",
            id="auto-with-tp",
        ),
        pytest.param(
            {"sharding": {"mode": "auto", "pipelineParallel": 2}},
            SHARDING,
            "tensorParallel and pipelineParallel are set only in manual mode",
            id="auto-with-pp",
        ),
        pytest.param(
            {"engine": {"kind": "custom"}},
            ENGINE,
            "image is required when kind is custom",
            id="custom-without-image",
        ),
        pytest.param(
            {
                "model.architecture": {
                    "numLayers": 1,
                    "hiddenSize": 64,
                    "numAttentionHeads": 12,
                    "numKeyValueHeads": 8,
                }
            },
            ARCHITECTURE,
            "numAttentionHeads must be divisible by numKeyValueHeads",
            id="heads-not-divisible",
        ),
        pytest.param(
            {"engine.env": [{"name": "HF_TOKEN", "value": "x", "valueFrom": SECRET}]},
            ENV0,
            "value and valueFrom are exclusive: set one of them",
            id="env-value-and-value-from",
        ),
        pytest.param(
            {"engine.env": [{"name": "HF_HOME", "value": "/cache"}]},
            ENV0,
            "name HF_HOME is set by inferfleet, use another name",
            id="env-hf-home",
        ),
        pytest.param(
            {"engine.env": [{"name": "A", "value": "1"}, {"name": "POD_INDEX", "value": "0"}]},
            ENV1,
            "name POD_INDEX is set by inferfleet, use another name",
            id="env-pod-index",
        ),
        pytest.param(
            {"engine.env": [{"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}]},
            ENGINE,
            "env sets A more than once",
            id="env-duplicate",
        ),
        pytest.param(
            {"engine.env": [{"name": "A", "valueFrom": {}}]},
            (*ENV0, "valueFrom"),
            "valueFrom sets exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
            id="value-from-empty",
        ),
        pytest.param(
            {
                "engine.env": [
                    {"name": "A", "valueFrom": {**SECRET, "fieldRef": {"fieldPath": "metadata.name"}}}
                ]
            },
            (*ENV0, "valueFrom"),
            "valueFrom sets exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
            id="value-from-two-sources",
        ),
        pytest.param(
            {"engine.args": ["--trust-remote-code", "--tensor-parallel-size", "8"]},
            ENGINE,
            "args must not set --tensor-parallel-size: inferfleet sets it for vllm",
            id="args-tp",
        ),
        pytest.param(
            {"engine.args": ["--port=9000"]},
            ENGINE,
            "args must not set --port: inferfleet sets it for vllm",
            id="args-port-equals",
        ),
        pytest.param(
            {"engine.args": ["--max_num_seqs", "8"]},
            ENGINE,
            "args must not set --max-num-seqs: inferfleet sets it for vllm",
            id="args-underscores",
        ),
        pytest.param(
            {"engine": {"kind": "sglang", "args": ["--tp-size", "2"]}},
            ENGINE,
            "args must not set --tp-size: inferfleet sets it for sglang",
            id="args-sglang-tp",
        ),
        pytest.param(
            {"engine": {"kind": "tgi", "args": ["--num-shard=2"]}},
            ENGINE,
            "args must not set --num-shard: inferfleet sets it for tgi",
            id="args-tgi-shards",
        ),
        pytest.param(
            {"engine.port": 6379},
            ENGINE,
            "port 6379 is used by inferfleet for vllm multi-node groups, choose another",
            id="port-ray",
        ),
        pytest.param(
            {"engine": {"kind": "sglang", "port": 5000}},
            ENGINE,
            "port 5000 is used by inferfleet for sglang multi-node groups, choose another",
            id="port-sglang-dist",
        ),
        pytest.param(
            {"scheduling": {"nodeSelector": {"a" * 318: "x"}}},
            SCHEDULING,
            "nodeSelector keys are label keys of at most 317 characters",
            id="node-selector-key-too-long",
        ),
        pytest.param(
            {"model.source": "pvc://weights/m", "model.cache": {"prefetchNodes": 2}},
            ("model",),
            "cache.prefetchNodes needs an hf:// or s3:// source (the node cache fetches only those)",
            id="prefetch-of-an-uncached-source",
        ),
        pytest.param(
            {"model.architecture": ARCH_12_HEADS, "sharding": {"mode": "manual", "tensorParallel": 8}},
            SPEC,
            "sharding.tensorParallel must divide model.architecture.numAttentionHeads",
            id="tp-does-not-divide-heads",
        ),
        pytest.param(
            {
                "model.architecture": {**ARCH_12_HEADS, "numKeyValueHeads": 6},
                "sharding": {"mode": "manual", "tensorParallel": 4},
            },
            SPEC,
            "sharding.tensorParallel and model.architecture.numKeyValueHeads: one must be a multiple of "
            "the other",
            id="tp-and-kv-heads",
        ),
        pytest.param(
            {
                "model.architecture": ARCH_12_HEADS,
                "sharding": {"mode": "manual", "tensorParallel": 1, "pipelineParallel": 16},
            },
            SPEC,
            "sharding.pipelineParallel must be at most model.architecture.numLayers",
            id="pp-beyond-layers",
        ),
    ],
)
def test_cross_field_rules_reject_with_the_crd_message(
    changes: dict[str, Any], where: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        InferenceServiceSpec.model_validate(with_changes(MINIMAL_SPEC, changes))
    assert rule_failures(info.value) == {(where, message)}


def test_all_failing_rules_are_reported_together() -> None:
    with pytest.raises(ValidationError) as info:
        InferenceServiceSpec.model_validate({**MINIMAL_SPEC, "sharding": {"tensorParallel": 3}})
    assert rule_failures(info.value) == {
        (SHARDING, "tensorParallel and pipelineParallel are set only in manual mode"),
        (SHARDING, "tensorParallel must be a power of two"),
    }


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"scaling": {"minReplicas": 4, "maxReplicas": 4}}, id="min-equals-max"),
        pytest.param({"scaling": {"minReplicas": 0}}, id="min-zero"),
        pytest.param({"sharding": {"mode": "manual", "tensorParallel": 64}}, id="manual-tp-64"),
        pytest.param(
            {"sharding": {"mode": "manual", "tensorParallel": 8, "pipelineParallel": 3}}, id="manual-tp-pp"
        ),
        pytest.param({"engine": {"kind": "custom", "image": "ghcr.io/me/engine:1"}}, id="custom-with-image"),
        pytest.param(
            {"model.architecture": {"numLayers": 1, "hiddenSize": 64, "numAttentionHeads": 12}},
            id="mha-no-kv-heads",
        ),
        pytest.param({"replicas": 0}, id="zero-replicas"),
        pytest.param({"replicas": 1000, "scaling": {"minReplicas": 1000, "maxReplicas": 1000}}, id="1000"),
        pytest.param(
            {"scaling": {"scaleUpStabilizationSeconds": 3600, "scaleDownStabilizationSeconds": 3600}},
            id="hour-windows",
        ),
        pytest.param({"model.parametersBillions": 70}, id="int-for-a-float"),
        pytest.param({"engine.env": [{"name": "EMPTY"}]}, id="env-without-value"),
        pytest.param(
            {"engine.env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
            id="env-field-ref",
        ),
        pytest.param(
            {"engine": {"kind": "custom", "image": "x:1", "args": ["--port", "1"]}}, id="custom-args"
        ),
        pytest.param({"engine": {"kind": "tgi", "port": 6379}}, id="tgi-port-6379"),
        pytest.param({"engine.args": ["--gpu-memory-utilization=0.8", "--portal"]}, id="args-not-generated"),
        pytest.param(
            {"model.architecture": ARCH_12_HEADS, "sharding": {"mode": "manual", "tensorParallel": 4}},
            id="tp-4-of-12-heads",
        ),
        pytest.param({"accelerator": None, "sharding": None}, id="no-accelerator-no-sharding"),
    ],
)
def test_valid_edge_cases_are_accepted(changes: dict[str, Any]) -> None:
    InferenceServiceSpec.model_validate(with_changes(MINIMAL_SPEC, changes))


@pytest.mark.parametrize(
    ("changes", "location"),
    [
        pytest.param({"model.dtype": "bf16"}, ("model", "dtype"), id="unknown-dtype"),
        pytest.param({"engine.kind": "triton"}, ("engine", "kind"), id="unknown-engine"),
        pytest.param({"sharding": {"mode": "magic"}}, ("sharding", "mode"), id="unknown-mode"),
        pytest.param({"model.source": "https://example.com/m"}, ("model", "source"), id="bad-source-scheme"),
        pytest.param({"model.source": "hf://"}, ("model", "source"), id="empty-source-path"),
        pytest.param({"model.parametersBillions": 0}, ("model", "parametersBillions"), id="zero-params"),
        pytest.param({"model.name": ""}, ("model", "name"), id="empty-name"),
        pytest.param({"model.maxModelLen": 0}, ("model", "maxModelLen"), id="zero-context"),
        pytest.param({"engine.port": 70000}, ("engine", "port"), id="port-too-big"),
        pytest.param(
            {"engine.maxConcurrentRequests": 0}, ("engine", "maxConcurrentRequests"), id="zero-concurrency"
        ),
        pytest.param({"engine.env": [{"value": "x"}]}, ("engine", "env", 0, "name"), id="env-without-name"),
        pytest.param({"accelerator.memoryGiB": 0}, ("accelerator", "memoryGiB"), id="zero-memory"),
        pytest.param({"accelerator.gpusPerNode": 65}, ("accelerator", "gpusPerNode"), id="too-many-gpus"),
        pytest.param(
            {"sharding": {"mode": "manual", "tensorParallel": 128}},
            ("sharding", "tensorParallel"),
            id="tp-above-64",
        ),
        pytest.param(
            {"sharding": {"mode": "manual", "tensorParallel": 0}}, ("sharding", "tensorParallel"), id="tp-0"
        ),
        pytest.param({"scaling": {"maxReplicas": 0}}, ("scaling", "maxReplicas"), id="max-zero"),
        pytest.param({"scaling": {"targetQueueDepth": 0}}, ("scaling", "targetQueueDepth"), id="zero-target"),
        pytest.param({"replicas": -1}, ("replicas",), id="negative-replicas"),
        pytest.param({"engine.gpus": 2}, ("engine", "gpus"), id="unknown-field"),
        pytest.param({"replicas": 1001}, ("replicas",), id="replicas-above-1000"),
        pytest.param(
            {"model.cache": {"prefetchNodes": 17}},
            ("model", "cache", "prefetchNodes"),
            id="prefetch-above-16",
        ),
        pytest.param(
            {"model.cache": {"prefetchNodes": -1}},
            ("model", "cache", "prefetchNodes"),
            id="prefetch-negative",
        ),
        pytest.param({"replicas": "3"}, ("replicas",), id="replicas-string"),
        pytest.param({"replicas": 2.0}, ("replicas",), id="replicas-float"),
        pytest.param({"replicas": True}, ("replicas",), id="replicas-bool"),
        pytest.param({"scaling": {"maxReplicas": 1001}}, ("scaling", "maxReplicas"), id="max-replicas-1001"),
        pytest.param({"scaling": {"minReplicas": 1001}}, ("scaling", "minReplicas"), id="min-replicas-1001"),
        pytest.param(
            {"scaling": {"scaleDownStabilizationSeconds": 3601}},
            ("scaling", "scaleDownStabilizationSeconds"),
            id="down-window-above-hour",
        ),
        pytest.param(
            {"scaling": {"scaleUpStabilizationSeconds": 3601}},
            ("scaling", "scaleUpStabilizationSeconds"),
            id="up-window-above-hour",
        ),
        pytest.param(
            {"scaling": {"scaleToZeroAfterSeconds": 86401}},
            ("scaling", "scaleToZeroAfterSeconds"),
            id="scale-to-zero-above-day",
        ),
        pytest.param({"model.parametersBillions": "70"}, ("model", "parametersBillions"), id="params-string"),
        pytest.param(
            {"model.parametersBillions": float("inf")}, ("model", "parametersBillions"), id="params-inf"
        ),
        pytest.param(
            {"model.parametersBillions": float("nan")}, ("model", "parametersBillions"), id="params-nan"
        ),
        pytest.param(
            {"scaling": {"targetQueueDepth": "4"}}, ("scaling", "targetQueueDepth"), id="target-string"
        ),
        pytest.param(
            {"engine.enablePrefixCaching": "true"}, ("engine", "enablePrefixCaching"), id="bool-string"
        ),
        pytest.param({"engine.image": "r/" + "x" * 511}, ("engine", "image"), id="image-too-long"),
        pytest.param({"engine.args": ["-v"] * 129}, ("engine", "args"), id="too-many-args"),
        pytest.param({"engine.args": ["x" * 4097]}, ("engine", "args", 0), id="arg-too-long"),
        pytest.param(
            {"engine.env": [{"name": f"E{i}"} for i in range(129)]}, ("engine", "env"), id="too-many-env"
        ),
        pytest.param({"engine.env": [{"name": "1A"}]}, ("engine", "env", 0, "name"), id="env-name-digit"),
        pytest.param(
            {"engine.env": [{"name": "A", "value": "x" * 32769}]},
            ("engine", "env", 0, "value"),
            id="env-value-too-long",
        ),
        pytest.param(
            {"engine.env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
            ("engine", "env", 0, "valueFrom", "secretKeyRef", "key"),
            id="secret-ref-without-key",
        ),
        pytest.param(
            {"engine.env": [{"name": "A", "valueFrom": {"vaultRef": {}}}]},
            ("engine", "env", 0, "valueFrom", "vaultRef"),
            id="value-from-unknown-source",
        ),
        pytest.param({"model.name": "m" * 254}, ("model", "name"), id="model-name-too-long"),
        pytest.param(
            {"scheduling": {"tolerations": [{"key": "k"}] * 65}},
            ("scheduling", "tolerations"),
            id="tolerations",
        ),
        pytest.param(
            {"scheduling": {"nodeSelector": {f"k{i}": "v" for i in range(65)}}},
            ("scheduling", "nodeSelector"),
            id="node-selector-size",
        ),
        pytest.param(
            {"scheduling": {"nodeSelector": {"pool": "v" * 64}}},
            ("scheduling", "nodeSelector", "pool"),
            id="node-selector-value-too-long",
        ),
        pytest.param(
            {"engine.securityContext": {"runAsUser": 2**31}},
            ("engine", "securityContext", "runAsUser"),
            id="uid-above-int32",
        ),
        pytest.param(
            {"engine.maxConcurrentRequests": 2**31},
            ("engine", "maxConcurrentRequests"),
            id="concurrency-huge",
        ),
        pytest.param(
            {"sharding": {"mode": "manual", "tensorParallel": 1, "pipelineParallel": 65}},
            ("sharding", "pipelineParallel"),
            id="pp-above-64",
        ),
        pytest.param({"model": None}, ("model",), id="missing-model"),
    ],
)
def test_bad_values_are_rejected_at_their_field(
    changes: dict[str, Any], location: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        InferenceServiceSpec.model_validate(with_changes(MINIMAL_SPEC, changes))
    assert location in [err["loc"] for err in info.value.errors()]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    svc = parse_inference_service(yaml.safe_load(path.read_text()))
    assert (svc.api_version, svc.kind) == (API_VERSION, KIND)
    assert svc.spec.accelerator.product is not None


def test_the_three_llama_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"llama-3.1-8b-vllm.yaml", "llama-3.1-70b-vllm.yaml", "llama-3.1-405b-vllm.yaml"} <= names


def test_whole_object_with_status_round_trips() -> None:
    obj = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "llama-70b", "namespace": "ml", "generation": 3},
        "spec": DESIGN_SPEC,
        "status": {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
            "replicas": 2,
            "readyReplicas": 2,
            "selector": "inferfleet.io/service=llama-70b",
            "shardPlan": {"tensorParallel": 4, "pipelineParallel": 1, "gpusPerPod": 4, "podsPerReplica": 1},
            "placement": [{"replica": 0, "domain": "zone-a", "nodes": ["gpu-a-1"]}],
            "queueDepth": 3.5,
            "somethingNewer": True,
        },
    }
    svc = parse_inference_service(obj)
    assert svc.status is not None
    assert svc.status.phase is Phase.READY
    assert svc.status.shard_plan is not None
    assert (svc.status.shard_plan.layout, svc.status.shard_plan.total_gpus) == ("4x1", 4)
    assert svc.status.placement[0].nodes == ["gpu-a-1"]
    assert parse_inference_service(svc.model_dump(exclude_none=True)) == svc


def test_shard_plan_keeps_explicit_layout() -> None:
    plan = ShardPlan(tensor_parallel=8, pipeline_parallel=2, gpus_per_pod=8, pods_per_replica=2, layout="8x2")
    assert plan.model_dump(exclude_none=True) == {
        "tensorParallel": 8,
        "pipelineParallel": 2,
        "gpusPerPod": 8,
        "podsPerReplica": 2,
        "totalGpus": 16,
        "layout": "8x2",
    }


NAME_MESSAGE = (
    "metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, digits and "
    "'-', starting with a letter and ending with a letter or digit) so that its Services, pods and "
    "labels are valid"
)


@pytest.mark.parametrize(
    "name", ["llama.v3", "1llama", "Llama", "llama-", "llama_3", "a" * 64], ids=lambda n: n[:12]
)
def test_names_that_cannot_name_a_service_are_refused(name: str) -> None:
    obj = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": MINIMAL_SPEC}
    with pytest.raises(ValidationError) as info:
        parse_inference_service(obj)
    assert rule_failures(info.value) == {((), NAME_MESSAGE)}


@pytest.mark.parametrize("name", ["llama-3-1-8b", "a", "a" * 63])
def test_dns_labels_of_up_to_63_characters_are_accepted(name: str) -> None:
    obj = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": MINIMAL_SPEC}
    assert parse_inference_service(obj).metadata["name"] == name


def test_literal_api_version_matches_the_constants() -> None:
    svc = InferenceService(spec=InferenceServiceSpec.model_validate(MINIMAL_SPEC))
    assert (svc.api_version, svc.kind) == (API_VERSION, KIND)
    with pytest.raises(ValidationError):
        parse_inference_service({"apiVersion": "inferfleet.io/v1", "kind": KIND, "spec": MINIMAL_SPEC})


# The API server's own wording of schema errors; every other expected message is a CEL rule's.
SCHEMA_WORDING = ("in body", "Too long", "Too many", "Unsupported value", "unknown field", "Required value")


@pytest.mark.parametrize(("changes", "message"), REJECTED, ids=[m[:40] for _, m in REJECTED])
def test_what_the_api_server_refuses_pydantic_refuses_with_the_same_rule_message(
    changes: dict[str, Any], message: str
) -> None:
    """`inferfleet plan` and the operator agree with the CRD on every case of the bad-input table."""
    with pytest.raises(ValidationError) as info:
        parse_inference_service(cluster_body("bad", copy.deepcopy(changes)))
    if not any(words in message for words in SCHEMA_WORDING):
        assert message in str(info.value)
