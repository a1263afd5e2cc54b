"""Engine presets: the container each inference engine needs, derived from the spec and shard plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferfleet.api import Dtype, EngineKind, InferenceServiceSpec, ShardPlan
from inferfleet.planning.drain import build_drain_hook

DEFAULT_IMAGES: dict[EngineKind, str] = {
    EngineKind.VLLM: "vllm/vllm-openai:v0.11.0",
    EngineKind.SGLANG: "lmsysorg/sglang:v0.5.4",
    EngineKind.TGI: "ghcr.io/huggingface/text-generation-inference:3.3.6",
}
MODEL_CACHE_DIR = "/models"
SHM_DIR = "/dev/shm"
# Engines load weights before they answer /health: allow up to 30 minutes for big models.
STARTUP_PERIOD_SECONDS = 10
STARTUP_FAILURE_THRESHOLD = 180


@dataclass(frozen=True)
class ModelLocation:
    """What the engine is told to load, and the volume that holds it (if any)."""

    path: str
    volume: dict[str, Any] | None = None
    env: tuple[tuple[str, str], ...] = ()


def locate_model(source: str) -> ModelLocation:
    scheme, _, rest = source.partition("://")
    if scheme == "hf":
        return ModelLocation(path=rest, env=(("HF_HOME", f"{MODEL_CACHE_DIR}/hf"),))
    if scheme == "pvc":
        claim, _, sub_path = rest.partition("/")
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return ModelLocation(path=f"{MODEL_CACHE_DIR}/pvc/{sub_path}".rstrip("/"), volume=volume)
    if scheme == "oci":
        # An image volume (Kubernetes >= 1.31) mounts a model packaged as an OCI artifact.
        volume = {"name": "model", "image": {"reference": rest, "pullPolicy": "IfNotPresent"}}
        return ModelLocation(path=f"{MODEL_CACHE_DIR}/oci", volume=volume)
    # s3:// and gs://: the engines stream from object storage themselves.
    return ModelLocation(path=source)


def _vllm_args(spec: InferenceServiceSpec, model: str, shards: ShardPlan) -> list[str]:
    m, e = spec.model, spec.engine
    args = [
        "--model", model,
        "--served-model-name", m.name,
        "--host", "0.0.0.0",
        "--port", str(e.port),
        "--tensor-parallel-size", str(shards.tensor_parallel),
        "--pipeline-parallel-size", str(shards.pipeline_parallel),
        "--max-num-seqs", str(e.max_concurrent_requests),
        "--download-dir", MODEL_CACHE_DIR,
    ]  # fmt: skip
    if m.max_model_len:
        args += ["--max-model-len", str(m.max_model_len)]
    if m.dtype in (Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16):
        args += ["--dtype", m.dtype.value]
    elif m.dtype == Dtype.FP8:
        args += ["--quantization", "fp8"]
    if m.source.startswith(("s3://", "gs://")):
        args += ["--load-format", "runai_streamer"]
    args.append("--enable-prefix-caching" if e.enable_prefix_caching else "--no-enable-prefix-caching")
    return args


def _sglang_args(spec: InferenceServiceSpec, model: str, shards: ShardPlan) -> list[str]:
    m, e = spec.model, spec.engine
    args = [
        "--model-path", model,
        "--served-model-name", m.name,
        "--host", "0.0.0.0",
        "--port", str(e.port),
        "--tp-size", str(shards.tensor_parallel),
        "--pp-size", str(shards.pipeline_parallel),
        "--max-running-requests", str(e.max_concurrent_requests),
        "--enable-metrics",
    ]  # fmt: skip
    if m.max_model_len:
        args += ["--context-length", str(m.max_model_len)]
    if m.dtype in (Dtype.FLOAT32, Dtype.FLOAT16, Dtype.BFLOAT16):
        args += ["--dtype", m.dtype.value]
    elif m.dtype == Dtype.FP8:
        args += ["--quantization", "fp8"]
    if not e.enable_prefix_caching:
        args.append("--disable-radix-cache")
    return args


def _tgi_args(spec: InferenceServiceSpec, model: str, shards: ShardPlan) -> list[str]:
    m, e = spec.model, spec.engine
    args = [
        "--model-id", model,
        "--hostname", "0.0.0.0",
        "--port", str(e.port),
        "--num-shard", str(shards.tensor_parallel),
        "--max-concurrent-requests", str(e.max_concurrent_requests),
        "--huggingface-hub-cache", f"{MODEL_CACHE_DIR}/hf",
    ]  # fmt: skip
    if m.max_model_len:
        args += ["--max-total-tokens", str(m.max_model_len), "--max-input-tokens", str(m.max_model_len - 1)]
    if m.dtype in (Dtype.FLOAT16, Dtype.BFLOAT16):
        args += ["--dtype", m.dtype.value]
    elif m.dtype == Dtype.FP8:
        args += ["--quantize", "fp8"]
    return args


# Every flag and variable generated here is listed in inferfleet.api.reserved, which the API refuses
# in engine.args and engine.env (tests/unit/test_engines.py checks that the lists are complete).
_ARGS = {EngineKind.VLLM: _vllm_args, EngineKind.SGLANG: _sglang_args, EngineKind.TGI: _tgi_args}
_COMMANDS = {
    EngineKind.VLLM: ["python3", "-m", "vllm.entrypoints.openai.api_server"],
    EngineKind.SGLANG: ["python3", "-m", "sglang.launch_server"],
    EngineKind.TGI: ["text-generation-launcher"],
}


def _probes(kind: EngineKind) -> dict[str, Any]:
    if kind == EngineKind.CUSTOM:
        handler: dict[str, Any] = {"tcpSocket": {"port": "http"}}
    else:
        handler = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "startupProbe": {**handler, "periodSeconds": STARTUP_PERIOD_SECONDS,
                         "failureThreshold": STARTUP_FAILURE_THRESHOLD, "timeoutSeconds": 5},
        "readinessProbe": {**handler, "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 5},
        "livenessProbe": {**handler, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 10},
    }  # fmt: skip


def _env(spec: InferenceServiceSpec, location: ModelLocation) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in location.env]
    if spec.engine.kind == EngineKind.TGI and not spec.engine.enable_prefix_caching:
        env.append({"name": "PREFIX_CACHING", "value": "0"})
    env += [e.model_dump(mode="json", exclude_none=True) for e in spec.engine.env]
    return env


def build_engine_container(spec: InferenceServiceSpec, shards: ShardPlan) -> dict[str, Any]:
    """The engine container of one pod of a replica split as `shards` plans."""
    kind, gpus = spec.engine.kind, shards.gpus_per_pod
    location = locate_model(spec.model.source)
    container: dict[str, Any] = {
        "name": "engine",
        "image": spec.engine.image or DEFAULT_IMAGES[kind],
        "ports": [{"name": "http", "containerPort": spec.engine.port, "protocol": "TCP"}],
        "env": _env(spec, location),
        "resources": {
            "requests": {spec.accelerator.resource_name: str(gpus)},
            "limits": {spec.accelerator.resource_name: str(gpus)},
        },
        "volumeMounts": [
            {"name": "dshm", "mountPath": SHM_DIR},
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
        ],
        **_probes(kind),
    }
    if location.volume is not None:
        sub_dir = "pvc" if "persistentVolumeClaim" in location.volume else "oci"
        container["volumeMounts"].append(
            {"name": "model", "mountPath": f"{MODEL_CACHE_DIR}/{sub_dir}", "readOnly": True}
        )
    drain = build_drain_hook(kind, spec.engine.port, spec.engine.drain_seconds)
    if drain is not None:
        container["lifecycle"] = drain
    if spec.engine.security_context is not None:
        container["securityContext"] = spec.engine.security_context.model_dump(
            by_alias=True, exclude_none=True, exclude_defaults=True
        )
    if kind == EngineKind.CUSTOM:
        container["args"] = list(spec.engine.args)
    else:
        container["command"] = _COMMANDS[kind]
        container["args"] = _ARGS[kind](spec, location.path, shards) + list(spec.engine.args)
    return container


def build_engine_volumes(spec: InferenceServiceSpec, shards: ShardPlan) -> list[dict[str, Any]]:
    # NCCL needs shared memory for tensor parallelism; a memory-backed emptyDir replaces the 64 MiB default.
    shm_gib = max(1, 2 * shards.gpus_per_pod)
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib}Gi"}},
        {"name": "model-cache", "emptyDir": {}},
    ]
    location = locate_model(spec.model.source)
    if location.volume is not None:
        volumes.append(location.volume)
    return volumes
