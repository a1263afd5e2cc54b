import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).parents[2] / "examples"


def plan(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferfleet", "plan", str(path), *args], capture_output=True, text=True
    )


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.mark.parametrize(
    ("file", "shard_plan"),
    [
        (
            "llama-3.1-8b-vllm.yaml",
            {"tensorParallel": 1, "pipelineParallel": 1, "gpusPerPod": 1, "podsPerReplica": 1},
        ),
        (
            "llama-3.1-70b-vllm.yaml",
            {"tensorParallel": 4, "pipelineParallel": 1, "gpusPerPod": 4, "podsPerReplica": 1},
        ),
        (
            "llama-3.1-405b-vllm.yaml",
            {"tensorParallel": 8, "pipelineParallel": 2, "gpusPerPod": 8, "podsPerReplica": 2},
        ),
    ],
)
def test_plan_json_of_each_example(file: str, shard_plan: dict[str, int]) -> None:
    result = plan(EXAMPLES / file, "-o", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)["shardPlan"]
    assert {k: out[k] for k in shard_plan} == shard_plan
    assert out["totalGpus"] == shard_plan["tensorParallel"] * shard_plan["pipelineParallel"]
    assert set(out) >= {"weightsGiB", "kvCacheGiB", "perGpuGiB"}


def test_plan_table_is_readable(tmp_path: Path) -> None:
    result = plan(EXAMPLES / "llama-3.1-70b-vllm.yaml")
    assert result.returncode == 0, result.stderr
    assert "tensor parallel    4" in result.stdout
    assert "weights            131.5 GiB" in result.stdout


def test_a_model_that_fits_nowhere_exits_non_zero_saying_what_is_missing(tmp_path: Path) -> None:
    doc = example("llama-3.1-405b-vllm.yaml")
    doc["spec"]["model"]["dtype"] = "float32"
    doc["spec"]["sharding"] = {"mode": "manual", "tensorParallel": 8, "pipelineParallel": 1}
    result = plan(write(tmp_path, doc))
    assert result.returncode == 1
    assert "needs" in result.stderr
    assert "GiB per GPU" in result.stderr


def test_planning_an_unknown_gpu_without_its_memory_asks_for_it(tmp_path: Path) -> None:
    doc = example("llama-3.1-70b-vllm.yaml")
    doc["spec"]["accelerator"] = {"product": "Vendor-X1", "gpusPerNode": 8}
    result = plan(write(tmp_path, doc))
    assert result.returncode == 1
    assert "set accelerator.memoryGiB to plan without a cluster" in result.stderr
