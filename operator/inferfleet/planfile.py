"""`inferfleet plan FILE`: the shard plan of InferenceService YAMLs, without a cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from inferfleet.api import InferenceService, ShardPlan, parse_inference_service
from inferfleet.planning import sizing
from inferfleet.planning.gpus import known_gpu_memory_gib
from inferfleet.planning.service import GpuShape, build_sizing_input


class PlanFileError(Exception):
    """A document that cannot be planned; the message says what is missing."""


@dataclass(frozen=True)
class PlannedService:
    service: InferenceService
    gpu: GpuShape
    plan: ShardPlan

    def to_json(self) -> dict[str, Any]:
        accelerator = {
            "product": self.service.spec.accelerator.product,
            "memoryGiB": round(self.gpu.memory_gib, 1),
            "gpusPerNode": self.gpu.gpus_per_node,
        }
        name = self.service.metadata.get("name")
        return {"name": name, "accelerator": accelerator, "shardPlan": self.plan.dump()}

    def to_table(self) -> str:
        spec, plan = self.service.spec, self.plan
        usable = self.gpu.memory_gib * sizing.SizingInput.gpu_memory_utilization
        rows = [
            ("tensor parallel", str(plan.tensor_parallel)),
            ("pipeline parallel", str(plan.pipeline_parallel)),
            ("GPUs per pod", str(plan.gpus_per_pod)),
            ("pods per replica", str(plan.pods_per_replica)),
            ("GPUs per replica", str(plan.total_gpus)),
            ("weights", f"{plan.weights_gib:.1f} GiB"),
            ("KV cache", f"{plan.kv_cache_gib:.1f} GiB"),
            ("per GPU", f"{plan.per_gpu_gib:.1f} GiB of {usable:.1f} GiB usable"),
        ]
        title = (
            f"{self.service.metadata.get('name')} ({spec.model.name}, {spec.model.dtype.value}, "
            f"{spec.model.parameters_billions:g}B parameters) on {spec.accelerator.product or 'any GPU'} "
            f"({self.gpu.memory_gib:.1f} GiB x {self.gpu.gpus_per_node} per node)"
        )
        return "\n".join([title, *(f"  {label:18} {value}" for label, value in rows)])


def plan_document(doc: dict[str, Any]) -> PlannedService:
    try:
        service = parse_inference_service(doc)
    except ValidationError as e:
        raise PlanFileError(f"invalid InferenceService: {e}") from e
    acc = service.spec.accelerator
    memory = acc.memory_gib or known_gpu_memory_gib(acc.product)
    needed = {"accelerator.memoryGiB": memory, "accelerator.gpusPerNode": acc.gpus_per_node}
    missing = [name for name, value in needed.items() if value is None]
    if memory is None or acc.gpus_per_node is None:
        raise PlanFileError(
            f"{service.metadata.get('name')}: set {' and '.join(missing)} to plan without a cluster"
        )
    gpu = GpuShape(memory_gib=memory, gpus_per_node=acc.gpus_per_node)
    try:
        plan = sizing.plan_shards(build_sizing_input(service.spec, gpu))
    except sizing.SizingError as e:
        raise PlanFileError(f"{service.metadata.get('name')}: {e}") from e
    return PlannedService(service, gpu, plan)


def plan_file(path: Path) -> list[PlannedService]:
    return [plan_document(doc) for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(planned: list[PlannedService], output: str) -> str:
    if output == "json":
        docs = [p.to_json() for p in planned]
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    return "\n\n".join(p.to_table() for p in planned)
