from collections import Counter

import pytest
from pydantic import ValidationError

from inferfleet.localcluster.inventory import Inventory, build_nodes, load_inventory


@pytest.fixture(scope="module")
def nodes() -> list[dict]:
    return build_nodes(load_inventory())


def _labels(node: dict) -> dict[str, str]:
    return node["metadata"]["labels"]


def test_every_zone_has_h100_a100_and_l4_nodes(nodes: list[dict]) -> None:
    products_by_zone: dict[str, set[str]] = {}
    for n in nodes:
        labels = _labels(n)
        products_by_zone.setdefault(labels["topology.kubernetes.io/zone"], set()).add(
            labels.get("nvidia.com/gpu.product", "none")
        )
    assert len(products_by_zone) >= 3
    for zone, products in products_by_zone.items():
        assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L4"} <= products, zone


def test_gpu_nodes_carry_gpu_feature_discovery_labels_capacity_and_taint(nodes: list[dict]) -> None:
    h100 = next(n for n in nodes if n["metadata"]["name"] == "h100-a-1")
    labels = _labels(h100)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert labels["inferfleet.io/rack"] == "rack-a1"
    assert h100["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert h100["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert h100["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"

    l4 = next(n for n in nodes if _labels(n).get("nvidia.com/gpu.product") == "NVIDIA-L4")
    assert l4["status"]["allocatable"]["nvidia.com/gpu"] == "4"


def test_cpu_nodes_have_no_gpus_and_no_gpu_taint(nodes: list[dict]) -> None:
    cpu = [n for n in nodes if n["metadata"]["name"].startswith("cpu-")]
    assert cpu
    for n in cpu:
        assert "nvidia.com/gpu" not in n["status"]["capacity"]
        assert "nvidia.com/gpu.product" not in _labels(n)
        assert n["spec"] == {}


def test_node_names_are_unique_and_numbered_per_zone(nodes: list[dict]) -> None:
    names = [n["metadata"]["name"] for n in nodes]
    assert len(names) == len(set(names))
    assert {"h100-a-1", "h100-a-2", "h100-a-3", "h100-a-4"} <= set(names)
    racks = Counter(
        _labels(n)["inferfleet.io/rack"] for n in nodes if n["metadata"]["name"].startswith("h100-a")
    )
    assert racks == {"rack-a1": 2, "rack-a2": 2}


def test_a_rack_naming_an_unknown_pool_is_refused() -> None:
    raw = {
        "taint": {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        "rackLabel": "inferfleet.io/rack",
        "pools": {"cpu": {"cpu": "4", "memory": "8Gi", "instanceType": "cpu-4"}},
        "zones": {"zone-a": {"rack-a1": {"h200": 1}}},
    }
    with pytest.raises(ValidationError, match=r"zone-a/rack-a1 names unknown pools \['h200'\]"):
        Inventory.model_validate(raw)
