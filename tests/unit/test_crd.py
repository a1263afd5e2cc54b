"""The generated CRD: structural, complete, carrying the CEL rules, and in sync with crds/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from inferfleet.api.crd import CRD_FILENAME, build_crd, render_crd_yaml, structural_schema
from inferfleet.api.spec import (
    ARGS_DO_NOT_OVERRIDE,
    PP_AT_MOST_LAYERS,
    PREFETCH_NEEDS_CACHED_SOURCE,
    TP_AND_KV_HEADS,
    TP_DIVIDES_HEADS,
)
from inferfleet.crdfiles import check_crds, write_crds

REPO = Path(__file__).parents[2]
CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
ROOT = VERSION["schema"]["openAPIV3Schema"]


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under `node`, with a dotted path ("spec.sharding", "spec.engine.env[]")."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def all_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            yield from all_keys(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from all_keys(sub)


NODES = dict(schema_nodes(ROOT))


def test_schema_has_no_refs_titles_consts_or_unions() -> None:
    keys = set(all_keys(ROOT))
    assert not keys & {"$ref", "$defs", "title", "const", "anyOf", "allOf", "oneOf", "not"}


@pytest.mark.parametrize("path", list(NODES), ids=lambda p: p or "<root>")
def test_every_node_is_structural(path: str) -> None:
    node = NODES[path]
    assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
    if "properties" in node or node.get("x-kubernetes-preserve-unknown-fields"):
        assert node["type"] == "object"
    if "properties" in node:
        assert "additionalProperties" not in node
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        assert node.get(bound, True) is True
    assert node.get("default", "absent") is not None


def test_optional_fields_are_nullable_without_default() -> None:
    for path in ("spec.scaling", "spec.sharding.tensorParallel", "spec.engine.env[].valueFrom", "status",
                 "spec.model.parametersBillions", "spec.model.architecture", "status.model"):  # fmt: skip
        assert NODES[path]["nullable"] is True
        assert "default" not in NODES[path]


def test_defaults_match_the_design() -> None:
    defaults = {path: node["default"] for path, node in NODES.items() if "default" in node}
    assert defaults == {
        "spec.model.dtype": "bfloat16",
        "spec.model.cache.prefetchNodes": 0,
        "spec.engine.port": 8000,
        "spec.engine.maxConcurrentRequests": 256,
        "spec.engine.enablePrefixCaching": True,
        "spec.engine.drainSeconds": 120,
        "spec.accelerator": {"resourceName": "nvidia.com/gpu"},
        "spec.accelerator.resourceName": "nvidia.com/gpu",
        "spec.sharding": {"mode": "auto", "topologyKey": "topology.kubernetes.io/zone"},
        "spec.sharding.mode": "auto",
        "spec.sharding.topologyKey": "topology.kubernetes.io/zone",
        "spec.scaling.minReplicas": 1,
        "spec.scaling.maxReplicas": 8,
        "spec.scaling.targetQueueDepth": 4,
        "spec.scaling.scaleUpStabilizationSeconds": 0,
        "spec.scaling.scaleDownStabilizationSeconds": 300,
        "spec.scaling.activationTimeoutSeconds": 300,
        "spec.gateway.maxQueuedRequests": 1000,
        "spec.gateway.queueTimeoutSeconds": 60,
        "spec.scheduling.tolerations[].operator": "Equal",
        "spec.replicas": 1,
    }


@pytest.mark.parametrize("path", [p for p, n in NODES.items() if isinstance(n.get("default"), dict)])
def test_object_defaults_spell_out_nested_defaults(path: str) -> None:
    """The API server checks an object default against its CEL rules without defaulting inside it."""
    node = NODES[path]
    nested = {name: prop["default"] for name, prop in node["properties"].items() if "default" in prop}
    assert node["default"] == nested


def test_enums_and_bounds_are_carried() -> None:
    assert NODES["spec.model.dtype"]["enum"] == ["float32", "float16", "bfloat16", "fp8", "int8", "int4"]
    assert NODES["spec.engine.kind"]["enum"] == ["vllm", "sglang", "tgi", "custom"]
    assert NODES["spec.sharding.mode"]["enum"] == ["auto", "manual"]
    assert NODES["status.phase"]["enum"] == ["Pending", "Placing", "Deploying", "Ready", "Degraded", "Failed"]
    assert NODES["status.conditions[].status"]["enum"] == ["True", "False", "Unknown"]
    assert NODES["spec.model.source"]["pattern"] == "^(hf|s3|gs|pvc|oci)://.+"
    params = NODES["spec.model.parametersBillions"]
    assert (params["minimum"], params["exclusiveMinimum"]) == (0, True)
    assert (
        NODES["spec.sharding.tensorParallel"]["minimum"],
        NODES["spec.sharding.tensorParallel"]["maximum"],
    ) == (
        1,
        64,
    )
    assert NODES["spec.replicas"]["minimum"] == 0


def test_root_type_meta_and_metadata() -> None:
    assert ROOT["type"] == "object"
    assert ROOT["required"] == ["spec"]
    assert ROOT["properties"]["metadata"] == {"type": "object"}
    for name in ("apiVersion", "kind"):
        assert ROOT["properties"][name]["type"] == "string"


def test_free_form_only_where_intended() -> None:
    free = [path for path, node in NODES.items() if node.get("x-kubernetes-preserve-unknown-fields")]
    assert free == ["status.autoscaler"]


SPEC_NODES = {path: node for path, node in NODES.items() if path.startswith("spec")}


@pytest.mark.parametrize("path", [p for p, n in SPEC_NODES.items() if n["type"] == "string"])
def test_every_spec_string_is_bounded(path: str) -> None:
    node = SPEC_NODES[path]
    assert "enum" in node or 0 < node["maxLength"] <= 32768


@pytest.mark.parametrize("path", [p for p, n in SPEC_NODES.items() if n["type"] in ("array", "object")])
def test_every_spec_list_and_map_is_bounded(path: str) -> None:
    node = SPEC_NODES[path]
    if node["type"] == "array":
        assert 0 < node["maxItems"] <= 128
    elif "additionalProperties" in node:
        assert 0 < node["maxProperties"] <= 64


@pytest.mark.parametrize("path", [p for p, n in SPEC_NODES.items() if n["type"] in ("integer", "number")])
def test_every_spec_number_is_finite_and_integers_are_int32_or_int64(path: str) -> None:
    node = SPEC_NODES[path]
    assert node["maximum"] <= 2**31 - 1
    if node["type"] == "integer":
        assert node["format"] in ("int32", "int64")


def test_sizes_and_windows_have_their_ceilings() -> None:
    maxima = {
        path: NODES[path]["maximum"]
        for path in (
            "spec.replicas",
            "spec.scaling.minReplicas",
            "spec.scaling.maxReplicas",
            "spec.scaling.scaleUpStabilizationSeconds",
            "spec.scaling.scaleDownStabilizationSeconds",
            "spec.scaling.scaleToZeroAfterSeconds",
        )
    }
    assert maxima == {
        "spec.replicas": 1000,
        "spec.scaling.minReplicas": 1000,
        "spec.scaling.maxReplicas": 1000,
        "spec.scaling.scaleUpStabilizationSeconds": 3600,
        "spec.scaling.scaleDownStabilizationSeconds": 3600,
        "spec.scaling.scaleToZeroAfterSeconds": 86400,
    }
    limits = {
        "spec.engine.image": NODES["spec.engine.image"]["maxLength"],
        "spec.engine.args": NODES["spec.engine.args"]["maxItems"],
        "spec.engine.args[]": NODES["spec.engine.args[]"]["maxLength"],
        "spec.engine.env": NODES["spec.engine.env"]["maxItems"],
        "spec.scheduling.tolerations": NODES["spec.scheduling.tolerations"]["maxItems"],
        "spec.scheduling.nodeSelector": NODES["spec.scheduling.nodeSelector"]["maxProperties"],
    }
    assert limits == {
        "spec.engine.image": 512,
        "spec.engine.args": 128,
        "spec.engine.args[]": 4096,
        "spec.engine.env": 128,
        "spec.scheduling.tolerations": 64,
        "spec.scheduling.nodeSelector": 64,
    }


def test_message_expressions_do_not_convert_numbers_to_strings() -> None:
    """kube-apiserver prices string(int) as an unbounded string: one such messageExpression put the
    CRD's estimated CEL cost 100x over its budget and the CRD was refused."""
    expressions = [
        entry["messageExpression"]
        for node in NODES.values()
        for entry in node.get("x-kubernetes-validations", [])
        if "messageExpression" in entry
    ]
    assert expressions
    assert not [e for e in expressions if "string(" in e]


def test_yaml_has_no_anchors() -> None:
    assert "&id0" not in render_crd_yaml()


@pytest.mark.parametrize("path", [p for p in NODES if p.startswith(("spec", "status"))])
def test_every_field_has_a_description(path: str) -> None:
    assert NODES[path].get("description", "").strip() or path.endswith(("[]", "{}"))


def test_names_scope_and_version() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "inferenceservices.inferfleet.io"
    spec = CRD["spec"]
    assert (spec["group"], spec["scope"]) == ("inferfleet.io", "Namespaced")
    assert spec["names"] == {
        "kind": "InferenceService",
        "listKind": "InferenceServiceList",
        "plural": "inferenceservices",
        "singular": "inferenceservice",
        "shortNames": ["infsvc"],
        "categories": ["inferfleet"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1alpha1", True, True)]


def test_subresources() -> None:
    assert VERSION["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns() -> None:
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in VERSION["additionalPrinterColumns"]]
    assert columns == [
        ("Model", "string", ".spec.model.name"),
        ("Engine", "string", ".spec.engine.kind"),
        ("TPxPP", "string", ".status.shardPlan.layout"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Desired", "integer", ".spec.replicas"),
        ("Queue", "number", ".status.queueDepth"),
        ("Phase", "string", ".status.phase"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    for _, _, json_path in columns:
        if not json_path.startswith(".metadata"):
            assert json_path.removeprefix(".") in NODES


def test_cel_rules_are_where_they_belong() -> None:
    rules = {
        path: [(r["rule"], r["message"]) for r in node["x-kubernetes-validations"]]
        for path, node in NODES.items()
        if "x-kubernetes-validations" in node
    }
    assert rules == {
        "": [
            (
                "self.metadata.name.size() <= 63 && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, "
                "digits and '-', starting with a letter and ending with a letter or digit) so that its "
                "Services, pods and labels are valid",
            )
        ],
        "spec": [
            (
                TP_DIVIDES_HEADS.rule,
                "sharding.tensorParallel must divide model.architecture.numAttentionHeads",
            ),
            (
                TP_AND_KV_HEADS.rule,
                "sharding.tensorParallel and model.architecture.numKeyValueHeads: one must be a multiple "
                "of the other",
            ),
            (
                PP_AT_MOST_LAYERS.rule,
                "sharding.pipelineParallel must be at most model.architecture.numLayers",
            ),
        ],
        "spec.model": [(PREFETCH_NEEDS_CACHED_SOURCE.rule, PREFETCH_NEEDS_CACHED_SOURCE.message)],
        "spec.model.architecture": [
            (
                "!has(self.numKeyValueHeads) || self.numAttentionHeads % self.numKeyValueHeads == 0",
                "numAttentionHeads must be divisible by numKeyValueHeads",
            )
        ],
        "spec.engine": [
            ("self.kind != 'custom' || has(self.image)", "image is required when kind is custom"),
            (ARGS_DO_NOT_OVERRIDE.rule, "args must not set a flag inferfleet generates from the spec"),
            (
                "!(self.kind in {'vllm': 6379, 'sglang': 5000}) || "
                "self.port != {'vllm': 6379, 'sglang': 5000}[self.kind]",
                "port is used by inferfleet's multi-node groups of this engine, choose another",
            ),
        ],
        "spec.engine.env": [
            ("self.all(e, self.exists_one(f, f.name == e.name))", "env names must be unique")
        ],
        "spec.engine.env[]": [
            (
                "!has(self.value) || !has(self.valueFrom)",
                "value and valueFrom are exclusive: set one of them",
            ),
            (
                "!(self.name in ['HF_HOME', 'PREFIX_CACHING', 'POD_INDEX', 'LEADER_ADDRESS', 'GROUP_SIZE'])",
                "name must not be one of HF_HOME, PREFIX_CACHING, POD_INDEX, LEADER_ADDRESS, GROUP_SIZE: "
                "inferfleet sets them",
            ),
        ],
        "spec.engine.env[].valueFrom": [
            (
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                "has(self.resourceFieldRef)].exists_one(x, x)",
                "valueFrom sets exactly one of secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef",
            )
        ],
        "spec.engine.securityContext.seccompProfile": [
            (
                "(self.type == 'Localhost') == has(self.localhostProfile)",
                "localhostProfile is set exactly when type is Localhost",
            )
        ],
        "spec.sharding": [
            (
                "self.mode != 'manual' || has(self.tensorParallel)",
                "tensorParallel is required in manual mode",
            ),
            (
                "self.mode == 'manual' || (!has(self.tensorParallel) && !has(self.pipelineParallel))",
                "tensorParallel and pipelineParallel are set only in manual mode",
            ),
            (
                "!has(self.tensorParallel) || self.tensorParallel in [1, 2, 4, 8, 16, 32, 64]",
                "tensorParallel must be a power of two",
            ),
        ],
        "spec.scaling": [
            ("self.minReplicas <= self.maxReplicas", "minReplicas must be less than or equal to maxReplicas")
        ],
        "spec.scheduling": [
            (
                "!has(self.nodeSelector) || !('nvidia.com/gpu.product' in self.nodeSelector)",
                "set the GPU product with spec.accelerator.product, not scheduling.nodeSelector",
            ),
            (
                "!has(self.nodeSelector) || self.nodeSelector.all(k, k.size() <= 317)",
                "nodeSelector keys are label keys of at most 317 characters",
            ),
        ],
        "spec.scheduling.tolerations[]": [
            ("self.operator != 'Exists' || !has(self.value)", "value must be unset when operator is Exists"),
            (
                "has(self.key) || self.operator == 'Exists'",
                "operator must be Exists when key is unset (a toleration of every taint)",
            ),
            (
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds is set only with effect NoExecute",
            ),
        ],
    }


@pytest.mark.parametrize("path", [p for p, n in NODES.items() if "x-kubernetes-validations" in n])
def test_cel_rules_guard_optional_fields_with_has(path: str) -> None:
    """A field that may be absent (not required, no default) is only read after has() in the same rule."""
    node = NODES[path]
    for entry in node["x-kubernetes-validations"]:
        if node["type"] == "array":
            continue  # a rule on a list: `self` is the list, never absent
        for name in set(re.findall(r"self\.(\w+)", entry["rule"])):
            prop = node["properties"][name]
            # The API server sets metadata.name before validating, even for generateName.
            if name not in node.get("required", []) and "default" not in prop and path:
                assert f"has(self.{name})" in entry["rule"], (path, name)
        if "fieldPath" in entry:
            first, *rest = entry["fieldPath"].removeprefix(".").split(".")
            assert first in node["properties"]
            assert ".".join([path, first, *rest]) in NODES


def test_rendered_yaml_is_the_crd_with_a_header() -> None:
    text = render_crd_yaml()
    assert text.startswith("# Generated by `inferfleet crds`; do not edit.\n")
    assert yaml.safe_load(text) == CRD
    assert render_crd_yaml() == text


def test_crds_folder_is_in_sync_with_the_models() -> None:
    assert check_crds(REPO / "crds") == []


def test_check_crds_reports_missing_and_stale_files(tmp_path: Path) -> None:
    [missing] = check_crds(tmp_path)
    assert f"{CRD_FILENAME} is missing" in missing
    [path] = write_crds(tmp_path)
    assert path == tmp_path / CRD_FILENAME
    assert check_crds(tmp_path) == []
    path.write_text(path.read_text().replace("maximum: 64", "maximum: 32"))
    [stale] = check_crds(tmp_path)
    assert f"{CRD_FILENAME} differs from the models" in stale
    assert "-                    maximum: 32" in stale


class _Union(BaseModel):
    value: int | str


def test_unions_other_than_optional_are_refused() -> None:
    with pytest.raises(ValueError, match=r"only `X \| None` unions"):
        structural_schema(_Union)


def test_the_model_needs_only_a_name_and_a_source() -> None:
    """parametersBillions and architecture come from the model's files or the known models when unset."""
    assert NODES["spec.model"]["required"] == ["name", "source"]
    assert NODES["status.model.source"]["enum"] == ["Spec", "KnownModels", "Files"]
    assert NODES["status.model.parameters"]["type"] == "integer"  # counts beyond int32 (405,853,388,800)
