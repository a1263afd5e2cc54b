"""The autoscaler's types: its inputs, its policy, its memory between ticks and its decision.

`ScalingPolicy` holds what the InferenceService's spec says (bounds, target queue depth,
windows, scale to zero); `ScalingTuning` holds the policy's own constants, each default defined
once here and documented in the module docstring of `planning.scaling`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from inferfleet.api.status import ScalingReason
from inferfleet.planning.startup import NodeWarmth, StartupStats

Samples = tuple[tuple[float, float], ...]
LoadSamples = tuple[tuple[float, float, float], ...]
Recommendations = tuple[tuple[float, int], ...]


Reason = ScalingReason
"""Why a decision is what it is: the API's own enum (api/status.py), usable as Event and
condition reasons."""


@dataclass(frozen=True)
class ScalingSample:
    """What Prometheus says about one service at one tick, summed over its ready pods."""

    waiting: float | None
    """Requests waiting in the engines' queues; None when missing, NaN/inf or stale."""
    running: float | None
    """Requests running in the engines' batches; None when missing."""
    completion_rate: float | None = None
    """Requests finished per second over the last minute (the engines' success counters);
    None when the engine does not export one or the sample is missing."""
    arrival_rate: float | None = None
    """Requests per second counted at the gateway's door; None without a gateway. Unlike
    completions it is not capped by a saturated fleet, so it replaces the flow balance's estimate."""
    kv_cache_usage: float | None = None
    """Mean fraction (0..1) of the KV cache held by running requests over the ready replicas
    (vLLM `vllm:kv_cache_usage_perc`, SGLang `sglang:token_usage`); None when the engine does
    not export one (TGI) or the sample is missing: then the slots alone say what is full."""


@dataclass(frozen=True)
class ScalingTuning:
    """The policy's constants: the same for every service; the benchmark runs these defaults."""

    target_utilization: float = 0.95
    """Scale up when running requests exceed this share of the fleet's batch slots. High,
    because the queue term catches overload anyway and every point of idle headroom is paid in
    GPU-hours around the clock; the trend term covers ramps."""
    scale_down_utilization: float = 0.85
    """Shrink only to a size that the recent load would fill to at most this share: the
    hysteresis band below `target_utilization` that stops +1/-1 flapping."""
    trend_window_seconds: float = 300
    """Running-request samples of this long are fitted by least squares for the trend (0 = off)."""
    trend_lookahead_seconds: float = 120
    """How far ahead a rising trend is extrapolated when the next replica's start is not known
    (nothing learned yet): about a typical cold start."""
    min_lookahead_seconds: float = 15
    max_lookahead_seconds: float = 600
    """A learned start (`expected_start`) is the lookahead, kept within these: one tick at least
    (a replica cannot help before the next decision), and at most ten minutes (beyond that the
    trend of the last five is no forecast)."""
    trend_recent_half: bool = True
    """The trend's slope is at most the slope of the latest half of its window: a line fitted
    over five minutes still "rises" for minutes after a ramp has stopped (on conv x5 the fill of
    the first minute was extrapolated at t = 165 s to 12 replicas where 8 were needed, held
    through the scale-down window: 0.4 GPU-hours); a ramp still under way rises in both."""
    trend_max_growth: float = 0.5
    """The extrapolation adds at most this share of the current running requests, so the
    start of a burst does not turn into a runaway forecast."""
    scale_up_max_factor: float = 1.0
    """A scale-up adds at most this many times the READY replicas (1.0 = double)..."""
    scale_up_min_step: int = 4
    """...or this many replicas, whichever is more."""
    scale_down_max_step: int = 1
    scale_down_max_fraction: float = 0.1
    """A scale-down removes at most max(step, ceil(fraction * current)) replicas..."""
    scale_down_interval_seconds: float = 60
    """...and happens at most once per this many seconds."""
    flap_damping_factor: float = 2.0
    """A scale-up soon after a scale-down multiplies the scale-down window by this (1 = off)..."""
    flap_reversal_seconds: float = 600
    """...when it comes within this many seconds of the scale-down (a replica released and
    wanted back within two cold starts was barely worth releasing)..."""
    flap_max_window_seconds: float = 900
    """...up to this window..."""
    flap_memory_seconds: float = 1800
    """...for this long after the reversal; then the spec's window applies again..."""
    flap_evidence_seconds: float = 3600
    """...and only when requests queued above `target_queue_depth` per replica, starting ones
    included, within this long: a service whose queue never outran its fleet lost nothing by
    releasing a replica the trend then asked back (on conv x5, seed 0, a +1 at t = 1,260 s with
    no one waiting doubled the window and held 9 replicas for over 9 minutes while the load
    asked for 5-7: 0.27 GPU-hours; on seed 2 a queue of 29 at t = 285 s, above 4 per ready
    replica but met by the 5 starting ones, did the same: 0.26 GPU-hours)."""
    arrival_window_seconds: float = 60
    """The completion rate's window (`rate(...[1m])`); arrivals = completions + load growth over it."""
    backlog_drain_seconds: float = 120
    """With a completion rate, size for draining the backlog in this long (about a cold start)."""
    saturated_drain_seconds: float = 15
    """...but in this long when the fleet is saturated (no free slot, or the KV cache full)
    and, at its pace over the last `arrival_window_seconds`, the queue would not drain within
    `backlog_drain_seconds`: about one service time of a chat request. Completions are then
    capped by the fleet, so the flow balance only bounds the arrivals from below; and in a
    first-come-first-served queue that does not drain every newcomer waits behind the whole
    backlog, so that wait, not the cold start, is what the bound is about."""
    backlog_growth_share: float = 1.0
    """A saturated queue that does not drain is sized for the backlog it will have when the
    replicas requested now are Ready: today's plus its growth over the last
    `arrival_window_seconds` times this share of the expected start (0 = today's backlog)."""
    kv_cache_utilization: float = 0.9
    """Size so that the KV cache is at most this full (the share of `kv_cache_usage`, scaled
    down like the slots' for the scale-down window), and count a fleet above it as saturated:
    long-context requests fill the KV cache before the batch limit, and a request whose prompt
    does not fit waits while slots are free."""
    kv_trend_window_seconds: float = 120
    """Until the running term's trend has its history (half of `trend_window_seconds`),
    scaling up for the KV cache follows the running requests' trend with this shorter window:
    from half of it (one minute) of history, its slope capped by that of the latest half; the
    larger of this and the running term's trend (0: that one alone). A cache filling with long
    decodes is full a few minutes after a fleet starts; ServeGen's R1 hour filled 7 replicas'
    to 83% in the first minute and lost minute 4 to a queue: the 5-minute trend, which needs
    150 s of history, asked at t = 165 s, and those replicas were Ready at 315 s. After that
    the running term's trend alone: the short one's recent half is four samples, and its
    wiggles cost Mooncake up to 0.3 GPU-hours and ServeGen's seed 2 more than 1 and its 0.99.
    Where the KV cache is far from full (conv, code) it changes nothing."""


DEFAULT_TUNING = ScalingTuning()


@dataclass(frozen=True, init=False)
class ScalingPolicy:
    """The spec's scaling settings, and the tuning constants apart in `tuning`."""

    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    """Waiting requests per replica to aim for."""
    max_concurrent_requests: int
    """Per replica: the engine's running-batch limit."""
    scale_up_stabilization_seconds: float
    scale_down_stabilization_seconds: float
    scale_to_zero_after_seconds: float | None
    tuning: ScalingTuning

    def __init__(
        self,
        min_replicas: int,
        max_replicas: int,
        target_queue_depth: float,
        max_concurrent_requests: int,
        scale_up_stabilization_seconds: float = 0,
        scale_down_stabilization_seconds: float = 300,
        scale_to_zero_after_seconds: float | None = None,
        tuning: ScalingTuning = DEFAULT_TUNING,
        **tuning_overrides: Any,
    ) -> None:
        """`tuning_overrides` set single constants of `tuning` by name, so that
        `dataclasses.replace(policy, trend_window_seconds=0)` works; an unknown name raises."""
        fields = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_queue_depth": target_queue_depth,
            "max_concurrent_requests": max_concurrent_requests,
            "scale_up_stabilization_seconds": scale_up_stabilization_seconds,
            "scale_down_stabilization_seconds": scale_down_stabilization_seconds,
            "scale_to_zero_after_seconds": scale_to_zero_after_seconds,
            "tuning": replace(tuning, **tuning_overrides) if tuning_overrides else tuning,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def down_window(self, state: ScalerState, now: float) -> float:
        """The scale-down window in force: the spec's, or a damped (longer) one."""
        base = float(self.scale_down_stabilization_seconds)
        until = state.scale_down_window_until
        if state.scale_down_window is not None and until is not None and now < until:
            return max(base, state.scale_down_window)
        return base


@dataclass(frozen=True)
class ScalerState:
    """What the policy remembers between ticks; persisted in status so restarts keep windows."""

    recommendations: Recommendations = ()
    """(time, replicas to keep) inside the longest window in force, oldest first. A run of
    equal values is stored as its newest entry only (the window max/min are unchanged)."""
    last_active: float | None = None
    """Last time the load (waiting + running) was > 0, the fleet was woken from zero by someone
    else (a gateway holding a request), or the first observation."""
    last_replicas: int | None = None
    """The replicas the last tick left (its decision)."""
    last_scale_time: float | None = None
    last_scale_down: float | None = None
    scale_down_window: float | None = None
    """A damped scale-down window (seconds), in force until `scale_down_window_until`."""
    scale_down_window_until: float | None = None
    last_overload: float | None = None
    """Last time more requests waited than `target_queue_depth` per replica (ready or starting)."""
    running_samples: LoadSamples = ()
    """(time, running, waiting requests) of the trend window."""
    startup: StartupStats = field(default_factory=StartupStats)
    """The service's learned starts (`planning.startup`); the policy takes only the expected
    start from it. Kept in `status.startup`, not in the window state."""
    warmth: NodeWarmth | None = None
    """Since when each node's cache has held the weights, as this operator process saw it."""

    def to_status(self) -> dict[str, Any]:
        """JSON-serialisable form with camelCase keys (the inverse of `from_status`)."""
        return {
            "recommendations": [{"time": t, "replicas": r} for t, r in self.recommendations],
            "lastActive": self.last_active,
            "lastReplicas": self.last_replicas,
            "lastScaleTime": self.last_scale_time,
            "lastScaleDown": self.last_scale_down,
            "scaleDownWindowSeconds": self.scale_down_window,
            "scaleDownWindowUntil": self.scale_down_window_until,
            "lastOverload": self.last_overload,
            "runningSamples": [{"time": t, "running": v, "waiting": w} for t, v, w in self.running_samples],
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> ScalerState:
        """Parse `to_status` output; anything missing or malformed is dropped, never raised."""
        if not isinstance(raw, Mapping):
            return cls()
        window = finite(raw.get("scaleDownWindowSeconds"))
        return cls(
            recommendations=_recommendations(raw.get("recommendations")),
            last_active=finite(raw.get("lastActive")),
            last_replicas=_replicas(raw.get("lastReplicas")),
            last_scale_time=finite(raw.get("lastScaleTime")),
            last_scale_down=finite(raw.get("lastScaleDown")),
            scale_down_window=window if window is not None and window >= 0 else None,
            scale_down_window_until=finite(raw.get("scaleDownWindowUntil")),
            last_overload=finite(raw.get("lastOverload")),
            running_samples=_load_samples(raw.get("runningSamples")),
        )


@dataclass(frozen=True)
class ScalingDecision:
    replicas: int
    """What spec.replicas should be."""
    reason: str
    """A `Reason`."""
    message: str
    limited: bool
    """True when min/max clipped the recommendation (the operator sets ScalingLimited)."""
    current_replicas: int | None = None
    """The replicas the decision started from; `direction` compares against it."""
    recommendation: int | None = None
    """This tick's recommendation before bounds, windows and step limits (None: no metrics)."""

    @property
    def direction(self) -> str:
        """ "up", "down" or "none" relative to `current_replicas` ("none" when unknown)."""
        if self.current_replicas is None or self.replicas == self.current_replicas:
            return "none"
        return "up" if self.replicas > self.current_replicas else "down"


def _replicas(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _recommendations(value: object) -> Recommendations:
    recs: list[tuple[float, int]] = []
    for item in _list(value):
        t, r = finite(item.get("time")), _replicas(item.get("replicas"))
        if t is not None and r is not None:
            recs.append((t, r))
    return tuple(sorted(recs, key=lambda e: e[0]))


def _load_samples(value: object) -> LoadSamples:
    samples: list[tuple[float, float, float]] = []
    for item in _list(value):
        t, v, w = finite(item.get("time")), finite(item.get("running")), valid(item.get("waiting"))
        if t is not None and v is not None and v >= 0:
            samples.append((t, v, w or 0.0))
    return tuple(sorted(samples, key=lambda e: e[0]))


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def finite(value: object) -> float | None:
    """A finite number as float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def valid(value: object) -> float | None:
    """A usable gauge reading, or None for missing, NaN, inf and negative ones."""
    f = finite(value)
    return f if f is not None and f >= 0 else None
