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


def test_a_known_model_is_planned_without_a_parameter_count() -> None:
    result = plan(EXAMPLES / "qwen3-32b-vllm.yaml", "-o", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["shardPlan"]["layout"] == "2x1"
    assert out["shardPlan"]["weightsGiB"] == 61.0  # 32,762,123,264 x 2 bytes
    assert out["model"]["source"] == "KnownModels"
    assert out["model"]["parameters"] == 32_762_123_264
    table = plan(EXAMPLES / "qwen3-32b-vllm.yaml").stdout
    assert "32.76B parameters from KnownModels" in table


def test_an_unknown_model_without_a_parameter_count_says_how_to_give_it(tmp_path: Path) -> None:
    doc = example("qwen3-32b-vllm.yaml")
    doc["spec"]["model"].update(source="hf://acme/private-model", name="private")  # qwen3-32b is known
    result = plan(write(tmp_path, doc))
    assert result.returncode == 1
    assert "hf://acme/private-model is not one of inferfleet's known models" in result.stderr
    assert "set spec.model.parametersBillions" in result.stderr


def test_a_spec_that_contradicts_the_known_model_plans_as_written_with_a_warning(tmp_path: Path) -> None:
    doc = example("llama-3.1-70b-vllm.yaml")
    doc["spec"]["model"]["parametersBillions"] = 80
    result = plan(write(tmp_path, doc))
    assert result.returncode == 0, result.stderr
    assert "(llama-3.1-70b-instruct, bfloat16, 80B parameters)" in result.stdout
    assert "  warning: spec.model.parametersBillions is 80 but inferfleet's known models" in result.stdout


def test_a_local_model_dir_gives_the_parameter_count_and_shape(tmp_path: Path) -> None:
    """`inferfleet plan FILE --model-dir DIR`: config.json and the safetensors index of a model
    inferfleet does not know."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = {"model_type": "my_arch", "num_hidden_layers": 40, "hidden_size": 5120,
              "num_attention_heads": 40, "num_key_value_heads": 8, "torch_dtype": "bfloat16"}  # fmt: skip
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 2 * 14_770_033_664}, "weight_map": {}})
    )
    doc = example("qwen3-32b-vllm.yaml")
    doc["spec"]["model"].update(source="s3://acme/my-model", name="mine")
    result = plan(write(tmp_path, doc), "-o", "json", "--model-dir", str(model_dir))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["model"] == {
        "source": "Files", "modelType": "my_arch", "parameters": 14_770_033_664, "dtype": "bfloat16",
        "architecture": {"numLayers": 40, "hiddenSize": 5120, "numAttentionHeads": 40, "numKeyValueHeads": 8},
    }  # fmt: skip
    assert out["shardPlan"]["weightsGiB"] == 27.5
    assert out["shardPlan"]["kvCacheGiB"] == 5.0  # 2 x 40 layers x 8 heads x 128 x 2 bytes x 32768 tokens
