"""Drain before stop: a replica being removed finishes its in-flight requests first.

When a pod starts terminating, Kubernetes takes it out of the Service's endpoints, so it gets no
new requests; its preStop hook then waits until the engine reports no running and no waiting
requests (or `drainSeconds` pass) before the engine gets SIGTERM. Scale-downs and rollouts both
go through it. The hook runs in the engine's own image, which has Python for vllm, sglang and tgi.
"""

from __future__ import annotations

from typing import Any

from inferfleet.api import EngineKind

# Metrics whose sum is the requests a replica still owes, as each engine names them.
BUSY_METRICS: dict[EngineKind, tuple[str, ...]] = {
    EngineKind.VLLM: ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    EngineKind.SGLANG: ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    EngineKind.TGI: ("tgi_batch_current_size", "tgi_queue_size"),
}
SHUTDOWN_SECONDS = 30
"""Time the engine gets after the drain to stop on SIGTERM."""

DRAIN_SCRIPT = """
import sys, time, urllib.request
port, limit, names = int(sys.argv[1]), float(sys.argv[2]), set(sys.argv[3:])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except Exception:
        break
    busy = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l and not l.startswith("#") and l.split("{")[0].split(" ")[0] in names)
    if busy <= 0:
        break
    time.sleep(1)
""".strip()


def build_drain_hook(kind: EngineKind, port: int, drain_seconds: int) -> dict[str, Any] | None:
    """The container's `lifecycle`, or None when the engine's load cannot be read (custom) or no drain."""
    metrics = BUSY_METRICS.get(kind)
    if metrics is None or drain_seconds <= 0:
        return None
    command = ["python3", "-c", DRAIN_SCRIPT, str(port), str(drain_seconds), *metrics]
    return {"preStop": {"exec": {"command": command}}}


def termination_grace_seconds(kind: EngineKind, drain_seconds: int) -> int:
    drains = kind in BUSY_METRICS and drain_seconds > 0
    return (drain_seconds if drains else 0) + SHUTDOWN_SECONDS
