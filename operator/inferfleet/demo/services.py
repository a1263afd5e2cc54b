"""What the demo serves and how much load each service gets: pure, so the unit tests read it too.

The examples in examples/ (scale-down windows shortened, see `demo_body`), plus one service of
the demo's own that scales to zero (`scale_from_zero_body`): a small model used in bursts, so the
run shows the gateway holding a request at the door while the service wakes up. Each service's
load is a rate function of the seconds since the load started (`load_of`).
"""

from __future__ import annotations

import copy
from typing import Any

from inferfleet.sim.load import RateFn

# The load cycle: the conversation trace's hour replayed in CYCLE_SECONDS, at full strength for
# BUSY_SECONDS, then at QUIET_SHARE of it (the lull) until the cycle repeats. A 5-minute run sees
# the fleet grow on the busy part and shrink on the quiet one.
CYCLE_SECONDS, BUSY_SECONDS, QUIET_SHARE = 300.0, 120.0, 0.15
TRACE_SCALE = 0.9
"""Busy-phase load: about 55 requests/s, 4 to 6 replicas of the 8B model at 64 concurrent requests."""
WINDOW_DIVISOR = 5
"""The demo replays an hour in 5 minutes; a scale-down stabilization window of 300 s (the 8B
example, 600 s for the 70B) would outlast the whole run, since a fleet only shrinks once the
window has passed since its last high recommendation. The demo divides the windows by this; the
files in examples/ keep their values."""
STEADY_RPS = 1.0
"""The services that are not autoscaled get a light steady load."""
BURST_RPS, BURST_FROM, BURST_UNTIL = 3.0, 15.0, 45.0
"""The scale-to-zero service's load: a burst in each cycle, nothing in between."""
SCALE_TO_ZERO_AFTER_SECONDS = 30


def demo_body(body: dict[str, Any]) -> dict[str, Any]:
    """The example as the demo applies it: scale-down windows shortened (see WINDOW_DIVISOR)."""
    body = copy.deepcopy(body)
    scaling = body["spec"].get("scaling")
    if scaling is not None:
        window = int(scaling.get("scaleDownStabilizationSeconds", 300))
        scaling["scaleDownStabilizationSeconds"] = window // WINDOW_DIVISOR
    return body


def scale_from_zero_body() -> dict[str, Any]:
    """Llama 3.2 1B on one A100, asleep until a request names it: minReplicas 0, replicas 0."""
    return {
        "apiVersion": "inferfleet.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "llama-3-2-1b"},
        "spec": {
            "model": {
                "name": "llama-3.2-1b-instruct",
                "source": "hf://meta-llama/Llama-3.2-1B-Instruct",
                "parametersBillions": 1.24,
                "dtype": "bfloat16",
                "architecture": {
                    "numLayers": 16,
                    "hiddenSize": 2048,
                    "numAttentionHeads": 32,
                    "numKeyValueHeads": 8,
                },
                "maxModelLen": 8192,
            },
            "engine": {"kind": "vllm", "image": "vllm/vllm-openai:v0.11.0", "maxConcurrentRequests": 32},
            "accelerator": {"product": "NVIDIA-A100-SXM4-40GB", "memoryGiB": 40, "gpusPerNode": 8},
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 2,
                "targetQueueDepth": 4,
                "scaleToZeroAfterSeconds": SCALE_TO_ZERO_AFTER_SECONDS,
                "scaleDownStabilizationSeconds": 0,
                "activationTimeoutSeconds": 120,
            },
            "replicas": 0,
        },
    }


def busy_then_quiet(trace: RateFn) -> RateFn:
    def load(t: float) -> float:
        within = t % CYCLE_SECONDS
        return trace(within) * (1.0 if within < BUSY_SECONDS else QUIET_SHARE)

    return load


def bursts(t: float) -> float:
    return BURST_RPS if BURST_FROM <= t % CYCLE_SECONDS < BURST_UNTIL else 0.0


def steady(t: float) -> float:
    return STEADY_RPS


def load_of(spec: dict[str, Any], trace: RateFn) -> RateFn:
    """Scale to zero: bursts; autoscaled: the trace's busy-then-quiet cycle; the others: steady."""
    scaling = spec.get("scaling")
    if scaling is None:
        return steady
    if int(scaling.get("minReplicas", 1)) == 0:
        return bursts
    return busy_then_quiet(trace)
