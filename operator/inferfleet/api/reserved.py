"""What the operator sets in an engine container itself, so a spec may not set it again.

The CRD's rules and the pydantic models refuse these in `engine.args`, `engine.env` and
`engine.port`. planning/engines.py and planning/groups.py generate them; tests/unit/test_engines.py
checks that every flag and variable they generate is listed here.
"""

from __future__ import annotations

# Command-line flags inferfleet generates, by engine kind (custom: none), as the engines spell them
# (vLLM also reads `--tensor_parallel_size`: user args are compared with '_' read as '-').
GENERATED_FLAGS: dict[str, tuple[str, ...]] = {
    "vllm": (
        "--model", "--served-model-name", "--host", "--port",
        "--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "-pp",
        "--max-num-seqs", "--download-dir", "--max-model-len", "--dtype",
        "--enable-prefix-caching", "--no-enable-prefix-caching", "--distributed-executor-backend",
    ),
    "sglang": (
        "--model-path", "--model", "--served-model-name", "--host", "--port",
        "--tp-size", "--tensor-parallel-size", "--pp-size", "--pipeline-parallel-size",
        "--max-running-requests", "--context-length", "--dtype", "--disable-radix-cache",
        "--nnodes", "--node-rank", "--dist-init-addr",
    ),
    "tgi": (
        "--model-id", "--hostname", "--port", "-p", "--num-shard", "--sharded",
        "--max-concurrent-requests", "--huggingface-hub-cache", "--max-total-tokens",
        "--max-input-tokens", "--max-input-length", "--dtype",
    ),
}  # fmt: skip

# Environment variables inferfleet sets in the engine container: the model cache of hf:// sources,
# TGI's prefix-caching switch, and a multi-node group's rank, leader and size.
OPERATOR_ENV_NAMES: tuple[str, ...] = (
    "HF_HOME",
    "PREFIX_CACHING",
    "POD_INDEX",
    "LEADER_ADDRESS",
    "GROUP_SIZE",
)

# Ports a multi-node group's headless Service opens besides engine.port, by engine kind.
RAY_PORT = 6379
SGLANG_DIST_PORT = 5000
OPERATOR_PORTS: dict[str, int] = {"vllm": RAY_PORT, "sglang": SGLANG_DIST_PORT}


def flag_name(arg: str) -> str:
    """The flag an engine argument sets (`--tp_size=4` -> `--tp-size`), as the CRD's rule reads it."""
    return arg.split("=")[0].replace("_", "-")


def overridden_flag(kind: str, args: list[str]) -> str | None:
    """The first of `args` that sets a flag inferfleet generates for `kind`, else None."""
    generated = GENERATED_FLAGS.get(kind, ())
    return next((flag_name(a) for a in args if flag_name(a) in generated), None)
