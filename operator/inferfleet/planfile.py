"""`inferfleet plan FILE [--model-dir DIR]`: the shard plan of InferenceService YAMLs, without a
cluster. A model's parameter count and shape come from the spec, else from a local copy of its
files (DIR: config.json, model.safetensors.index.json, *.safetensors), else from the table of
well-known models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from inferfleet.api import InferenceService, ModelStatus, ShardPlan, parse_inference_service
from inferfleet.planning import sizing
from inferfleet.planning.gpus import known_gpu_memory_gib
from inferfleet.planning.model_files import ModelFacts
from inferfleet.planning.service import (
    GpuShape,
    build_model_status,
    build_sizing_input,
    compute_known_facts,
)
from inferfleet.planning.spec_warnings import compute_model_mismatches
from inferfleet.weights.facts import ModelDirError, read_model_facts


class PlanFileError(Exception):
    """A document that cannot be planned; the message says what is missing."""


@dataclass(frozen=True)
class PlannedService:
    service: InferenceService
    gpu: GpuShape
    plan: ShardPlan
    model: ModelStatus | None = None
    warnings: tuple[str, ...] = field(default=())
    """Where the spec contradicts the model's known facts."""

    def to_json(self) -> dict[str, Any]:
        accelerator = {
            "product": self.service.spec.accelerator.product,
            "memoryGiB": round(self.gpu.memory_gib, 1),
            "gpusPerNode": self.gpu.gpus_per_node,
        }
        name = self.service.metadata.get("name")
        out = {"name": name, "accelerator": accelerator, "shardPlan": self.plan.dump()}
        if self.model is not None:
            out["model"] = self.model.dump()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    def _parameters_text(self) -> str:
        given = self.service.spec.model.parameters_billions
        if given is not None:
            return f"{given:g}B parameters"
        exact = self.model.parameters if self.model is not None else None
        return f"{(exact or 0) / 1e9:.2f}B parameters from {self.model.source.value if self.model else '?'}"

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
            f"{self._parameters_text()}) on {spec.accelerator.product or 'any GPU'} "
            f"({self.gpu.memory_gib:.1f} GiB x {self.gpu.gpus_per_node} per node)"
        )
        warnings = [f"  warning: {w}" for w in self.warnings]
        return "\n".join([title, *(f"  {label:18} {value}" for label, value in rows), *warnings])


def read_model_dir(directory: Path) -> ModelFacts:
    """The facts of a local copy of a model (inferfleet.weights.facts)."""
    try:
        return read_model_facts(directory)
    except ModelDirError as e:
        raise PlanFileError(str(e)) from e


def plan_document(doc: dict[str, Any], model_files: ModelFacts | None = None) -> PlannedService:
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
    known = compute_known_facts(service.spec, model_files)
    try:
        plan = sizing.plan_shards(build_sizing_input(service.spec, gpu, known))
    except sizing.SizingError as e:
        raise PlanFileError(f"{service.metadata.get('name')}: {e}") from e
    warnings = tuple(compute_model_mismatches(service.spec, known))
    return PlannedService(service, gpu, plan, build_model_status(service.spec, known), warnings)


def plan_file(path: Path, model_dir: Path | None = None) -> list[PlannedService]:
    """Every InferenceService in `path`; `model_dir` is a local copy of the model they serve."""
    files = read_model_dir(model_dir) if model_dir is not None else None
    return [plan_document(doc, files) for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(planned: list[PlannedService], output: str) -> str:
    if output == "json":
        docs = [p.to_json() for p in planned]
        return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2)
    return "\n\n".join(p.to_table() for p in planned)
