"""Queue-depth autoscaling policy: one pure decision per tick.

`compute_scaling_decision(sample, policy, current, ready, state, now)` returns what
`spec.replicas` should be and the state to persist in status for the next tick. It does no IO
and reads no clock: `now` (seconds on any epoch, non-decreasing across calls) is an input, so
the operator and the benchmark (`bench/autoscale`) run the very same code.

The capacity model
------------------
A replica runs up to `max_concurrent_requests` (C) requests at once; more wait in its queue.
From the waiting (W) and running (R) requests summed over the ready replicas, the replicas the
load needs (ready + starting) are the larger of

* `R' / (C * target_utilization)`: running batches stay below `target_utilization` of the
  limit. R' is R, or, while R has been rising over the last `trend_window_seconds`, R
  extrapolated `trend_lookahead_seconds` ahead (at most `trend_max_growth` above R): a cold
  start takes minutes, so a fleet that only reacts once batches are full is late on every ramp.
  (A least-squares line over the window also still "rises" for a while after a burst; that
  keeps a little more capacity a little longer, bounded by `trend_max_growth`);
* the queue term. With the engines' completion rate X (requests finished per second over the
  last minute; `ScalingSample.completion_rate`) it is a flow balance and Little's law over
  `arrival_window_seconds`: arrivals = X + the growth of R + W over the window, service time
  S = mean R over the window / X, and the fleet needs `arrivals * S / (C * target_utilization)`
  replicas for the arrivals plus `W * S / (C * backlog_drain_seconds)` to drain the backlog in
  about a cold start. A backlog is then what it is, a few seconds or minutes of work, not C
  slots per waiting request: sizing to the queue's length is what overshoots after every burst
  (and, held through the scale-down window, costs most of the GPU-hours). Without a rate (an
  engine with no counter, a service with nothing finished yet) it is `(R + W) / (C +
  target_queue_depth)`: with every replica running a full batch, at most `target_queue_depth`
  requests per replica would still wait.

That is the *recommendation*, a total compared with `current_replicas`, which includes the
replicas still starting: a queue that starting replicas will take when they come up does not
ask for more of them. A scale-up also adds at most `max(scale_up_min_step, ready *
scale_up_max_factor)` replicas on top of the READY ones. A queue keeps growing during a cold
start; converting that backlog into replicas tick after tick provisions for the backlog, not
the load (HPA on a queue metric runs to maxReplicas this way). The limit rises only as capacity
actually arrives, and still doubles a warm fleet in one tick on a burst.

Scaling down (where the GPU-hours and the flapping are)
-------------------------------------------------------
Each tick records a *keep* value: the recommendation recomputed with the lower
`scale_down_utilization` (a fresh state, e.g. a new service, starts with the current size, as
HPA's does, so no history is not mistaken for no load). As in HPA, the fleet only shrinks to
the highest value recorded in the scale-down window, so short dips do not remove replicas; using
a lower utilization for it than for scaling up is a hysteresis band, so a load near a boundary
does not flip 7-8-7-8. Then:

* never while the queue is above target (the fleet is still catching up);
* at most `max(scale_down_max_step, scale_down_max_fraction * current)` replicas per decision and
  one decision per `scale_down_interval_seconds`: capacity is released gradually, so a rebound
  finds part of it still there;
* flap damping: a scale-up within `flap_reversal_seconds` (ten minutes, two of the longest cold
  starts) of a scale-down shows the window was too short for this load, so the window is
  multiplied by `flap_damping_factor` (up to `flap_max_window_seconds`) for the next
  `flap_memory_seconds`. Recurring bursts then keep their capacity instead of paying a cold
  start, a queue and a reversal each time; steady load keeps the spec's window.

Scale-up stabilization is HPA's: with `scale_up_stabilization_seconds` > 0 a scale-up goes to
the lowest recommendation of that window (0, the default, scales up at once).

Missing data and zero
---------------------
Missing data (None, NaN, inf, negative) never scales down: the decision holds the current
replicas (corrected into [min, max], which is the spec, not a metric) with reason
`MetricsUnavailable`, and the state is returned unchanged, so a gap does not pollute the
windows (they still expire by time). At zero replicas no engine reports metrics, so missing
data holds zero; a positive waiting sample there (a `scaling.query` override reading a
gateway's queue, say) scales to at least one replica. The fleet goes to zero only with `min_replicas == 0` and
`scale_to_zero_after_seconds` set, once the load (W + R) has been zero that long; otherwise it
keeps at least one replica.

`ScalingDecision.direction` compares `replicas` with `current_replicas`, which the decision
carries. Every constant's default is the one the benchmark runs; see bench/autoscale/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Reasons (UpperCamel, usable as Kubernetes Event and condition reasons).
QUEUE_ABOVE_TARGET = "QueueAboveTarget"
LOAD_ABOVE_CAPACITY = "LoadAboveCapacity"
REPLICAS_STARTING = "ReplicasStarting"
LOAD_BELOW_CAPACITY = "LoadBelowCapacity"
STABILIZING_SCALE_DOWN = "StabilizingScaleDown"
STABILIZING_SCALE_UP = "StabilizingScaleUp"
AT_MAX_REPLICAS = "AtMaxReplicas"
AT_MIN_REPLICAS = "AtMinReplicas"
METRICS_UNAVAILABLE = "MetricsUnavailable"
SCALE_TO_ZERO = "ScaleToZero"
SCALE_FROM_ZERO = "ScaleFromZero"
STEADY = "Steady"

_EPS = 1e-9
_MIN_TREND_SAMPLES = 4

Samples = tuple[tuple[float, float], ...]
LoadSamples = tuple[tuple[float, float, float], ...]
Recommendations = tuple[tuple[float, int], ...]


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


@dataclass(frozen=True)
class ScalingPolicy:
    """The spec's scaling settings and the policy's tuning constants (defaults documented)."""

    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    """Waiting requests per replica to aim for."""
    max_concurrent_requests: int
    """Per replica: the engine's running-batch limit."""
    scale_up_stabilization_seconds: float = 0
    scale_down_stabilization_seconds: float = 300
    scale_to_zero_after_seconds: float | None = None

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
    """How far ahead a rising trend is extrapolated: about a typical cold start."""
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
    """...for this long after the reversal; then the spec's window applies again."""
    arrival_window_seconds: float = 60
    """The completion rate's window (`rate(...[1m])`); arrivals = completions + load growth over it."""
    backlog_drain_seconds: float = 120
    """With a completion rate, size for draining the backlog in this long (about a cold start)."""

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
    """Last time the load (waiting + running) was > 0 (or the first observation)."""
    last_scale_time: float | None = None
    last_scale_down: float | None = None
    scale_down_window: float | None = None
    """A damped scale-down window (seconds), in force until `scale_down_window_until`."""
    scale_down_window_until: float | None = None
    running_samples: LoadSamples = ()
    """(time, running, waiting requests) of the trend window."""

    def to_status(self) -> dict[str, Any]:
        """JSON-serialisable form with camelCase keys (the inverse of `from_status`)."""
        return {
            "recommendations": [{"time": t, "replicas": r} for t, r in self.recommendations],
            "lastActive": self.last_active,
            "lastScaleTime": self.last_scale_time,
            "lastScaleDown": self.last_scale_down,
            "scaleDownWindowSeconds": self.scale_down_window,
            "scaleDownWindowUntil": self.scale_down_window_until,
            "runningSamples": [{"time": t, "running": v, "waiting": w} for t, v, w in self.running_samples],
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> ScalerState:
        """Parse `to_status` output; anything missing or malformed is dropped, never raised."""
        if not isinstance(raw, Mapping):
            return cls()
        recs: list[tuple[float, int]] = []
        for item in _list(raw.get("recommendations")):
            t, r = _finite(item.get("time")), item.get("replicas")
            if t is not None and isinstance(r, int) and not isinstance(r, bool) and r >= 0:
                recs.append((t, r))
        samples: list[tuple[float, float, float]] = []
        for item in _list(raw.get("runningSamples")):
            t, v, w = _finite(item.get("time")), _finite(item.get("running")), _valid(item.get("waiting"))
            if t is not None and v is not None and v >= 0:
                samples.append((t, v, w or 0.0))
        window = _finite(raw.get("scaleDownWindowSeconds"))
        return cls(
            recommendations=tuple(sorted(recs, key=lambda e: e[0])),
            last_active=_finite(raw.get("lastActive")),
            last_scale_time=_finite(raw.get("lastScaleTime")),
            last_scale_down=_finite(raw.get("lastScaleDown")),
            scale_down_window=window if window is not None and window >= 0 else None,
            scale_down_window_until=_finite(raw.get("scaleDownWindowUntil")),
            running_samples=tuple(sorted(samples, key=lambda e: e[0])),
        )


@dataclass(frozen=True)
class ScalingDecision:
    replicas: int
    """What spec.replicas should be."""
    reason: str
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


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _valid(value: object) -> float | None:
    """A usable gauge reading, or None for missing, NaN, inf and negative ones."""
    f = _finite(value)
    return f if f is not None and f >= 0 else None


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def running_trend(samples: Samples, now: float) -> tuple[float, float] | None:
    """Least-squares fit of the samples: (value at `now`, slope per second), or None."""
    if len(samples) < _MIN_TREND_SAMPLES:
        return None
    ts = [t - now for t, _ in samples]
    vs = [v for _, v in samples]
    mt, mv = sum(ts) / len(ts), sum(vs) / len(vs)
    var = sum((t - mt) ** 2 for t in ts)
    if var <= 0:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / var
    return mv - slope * mt, slope


def expected_running(running: float, samples: Samples, policy: ScalingPolicy, now: float) -> float:
    """Running requests to plan for: the current ones, or more while they have been rising."""
    if (
        policy.trend_window_seconds <= 0
        or not samples
        or now - samples[0][0] < policy.trend_window_seconds / 2
    ):
        return running  # no trend before half a window of history
    fit = running_trend(samples, now)
    if fit is None or fit[1] <= 0:
        return running  # not rising, or no longer: the drop after a burst is not a ramp
    level, slope = fit
    growth = min(slope * policy.trend_lookahead_seconds, policy.trend_max_growth * max(running, 0.0))
    return max(running, level + growth)


def replicas_for(
    waiting: float,
    running: float,
    policy: ScalingPolicy,
    utilization: float,
    flow: tuple[float, float] | None = None,
) -> int:
    """Replicas (ready + starting) for this load at this batch utilization, before any limit.

    With `flow` (arrival rate, service time) the queue is sized by Little's law: the arrivals
    need `arrival * service` batch slots, and the backlog `waiting * service` slot-seconds
    drained over `backlog_drain_seconds`. Without it (no completion counter) the waiting
    requests count as load per replica, `(running + waiting) / (C + target_queue_depth)`.
    """
    c = float(max(policy.max_concurrent_requests, 1))
    u = max(utilization, _EPS)
    by_running = running / (c * u)
    if flow is None:
        by_queue = (running + waiting) / (c + max(policy.target_queue_depth, 0.0))
    else:
        arrival, service = flow
        drain = max(policy.backlog_drain_seconds, _EPS)
        by_queue = arrival * service / (c * u) + waiting * service / (c * drain)
    return max(0, math.ceil(max(by_running, by_queue) - _EPS))


def estimate_flow(
    waiting: float,
    running: float,
    rate: float | None,
    samples: LoadSamples,
    policy: ScalingPolicy,
    now: float,
) -> tuple[float, float] | None:
    """(arrival rate, service time) over the last `arrival_window_seconds`, or None.

    `samples` are the policy's (time, running, waiting), oldest first, this tick's last.

    A flow balance and Little's law: arrivals = completions (the engines' success counter
    rate) + the growth of running + waiting over the window; service time = mean running
    requests over the window / completion rate. None without a completion rate, or when
    requests run but none finished in the window (the service time is unknown).
    """
    if rate is None or policy.arrival_window_seconds <= 0:
        return None
    window = [e for e in samples if now - e[0] <= policy.arrival_window_seconds] or [(now, running, waiting)]
    mean_running = sum(r for _, r, _ in window) / len(window)
    if rate <= _EPS or mean_running <= _EPS:
        return (0.0, 0.0) if running + waiting <= 0 else None
    t0, r0, w0 = window[0]
    growth = ((running + waiting) - (r0 + w0)) / (now - t0) if now > t0 else 0.0
    return max(0.0, rate + growth), mean_running / rate


def _record(recs: Recommendations, now: float, value: int) -> Recommendations:
    if recs and recs[-1][1] == value:
        recs = recs[:-1]
    return (*recs, (now, value))


def compute_scaling_decision(
    sample: ScalingSample,
    policy: ScalingPolicy,
    current_replicas: int,
    ready_replicas: int,
    state: ScalerState,
    now: float,
) -> tuple[ScalingDecision, ScalerState]:
    """One autoscaling decision and the next state; see the module docstring."""
    current = max(0, current_replicas)
    ready = max(0, min(ready_replicas, current))
    starting = current - ready
    hi = max(policy.max_replicas, 0)
    lo = min(max(policy.min_replicas, 0), hi)
    waiting, running = _valid(sample.waiting), _valid(sample.running)
    if current == 0 and running is None:
        running = 0.0  # no engine runs, so nothing runs; a gateway may still report a queue
    where = f"{ready}/{current} replicas ready" + (f" ({starting} starting)" if starting else "")

    def decision(replicas: int, reason: str, message: str, limited: bool, rec: int | None) -> ScalingDecision:
        return ScalingDecision(replicas, reason, message, limited, current, rec)

    # ---- missing data: hold (inside [min, max]); the state is returned as it was ----
    if waiting is None or running is None:
        if current < lo:
            msg = f"queue metrics unavailable; raising to min {lo}"
            return decision(lo, AT_MIN_REPLICAS, msg, True, None), state
        if current > hi:
            msg = f"queue metrics unavailable; lowering to max {hi}"
            return decision(hi, AT_MAX_REPLICAS, msg, True, None), state
        msg = f"queue metrics unavailable; holding {current} replicas ({where}), no scale-down without data"
        return decision(current, METRICS_UNAVAILABLE, msg, False, None), state

    load = waiting + running
    numbers = f"queue {_fmt(waiting)}, running {_fmt(running)} on {where}"
    last_active = now if (load > 0 or state.last_active is None) else state.last_active
    down_window = policy.down_window(state, now)
    keep_for = max(policy.scale_up_stabilization_seconds, down_window)
    # A fresh state (new service, lost status) holds the current size for one window, as HPA's
    # maybeInitScaleDownStabilizationWindow does: no history is not evidence of a lower load.
    history = state.recommendations or ((now, current),)
    recs = tuple((t, r) for t, r in history if 0 <= now - t <= keep_for)
    keep_samples = max(policy.trend_window_seconds, policy.arrival_window_seconds)
    samples: LoadSamples = ()
    if keep_samples > 0:
        kept = (s for s in state.running_samples if 0 <= now - s[0] <= keep_samples)
        samples = (*kept, (now, running, waiting))
    trend: Samples = tuple((t, r) for t, r, _ in samples if now - t <= policy.trend_window_seconds)

    # ---- the floor: zero only when scale-to-zero is allowed and the idle period has passed ----
    may_be_zero = lo == 0 and policy.scale_to_zero_after_seconds is not None
    idle_for = now - last_active
    idle_long = may_be_zero and load <= 0 and idle_for >= (policy.scale_to_zero_after_seconds or 0.0)
    floor = lo if (lo > 0 or idle_long) else min(1, hi)

    planned = expected_running(running, trend, policy, now)
    flow = estimate_flow(waiting, running, _valid(sample.completion_rate), samples, policy, now)
    raw = replicas_for(waiting, planned, policy, policy.target_utilization, flow)
    rec = min(max(raw, floor), hi)
    limited = rec != raw and (raw > hi or raw < lo)
    keep = min(max(replicas_for(waiting, planned, policy, policy.scale_down_utilization, flow), floor), hi)
    recs = _record(recs, now, max(keep, rec))
    new_state = replace(state, recommendations=recs, last_active=last_active, running_samples=samples)

    queue_high = waiting > policy.target_queue_depth * max(ready, 1)

    def finish(replicas: int, reason: str, message: str, lim: bool) -> tuple[ScalingDecision, ScalerState]:
        out = new_state
        if replicas != current:
            out = replace(out, last_scale_time=now)
        if replicas < current:
            out = replace(out, last_scale_down=now)
        elif (
            replicas > current
            and policy.flap_damping_factor > 1
            and state.last_scale_down is not None
            and now - state.last_scale_down <= policy.flap_reversal_seconds
        ):
            window = min(policy.flap_max_window_seconds, down_window * policy.flap_damping_factor)
            out = replace(
                out, scale_down_window=window, scale_down_window_until=now + policy.flap_memory_seconds
            )
        return decision(replicas, reason, message, lim, raw), out

    # ---- from and to zero ----
    if current == 0:
        if load <= 0 and may_be_zero:
            return finish(0, STEADY, f"no load; staying at zero replicas ({numbers})", False)
        target = max(rec, 1)
        reason = AT_MIN_REPLICAS if raw < lo else SCALE_FROM_ZERO
        return finish(target, reason, f"{numbers}; scaling from zero to {target}", limited)
    if rec == 0 and idle_long:
        after = _fmt(policy.scale_to_zero_after_seconds or 0.0)
        return finish(
            0, SCALE_TO_ZERO, f"no load for {_fmt(idle_for)}s (>= {after}s); scaling to zero", False
        )

    # ---- stabilization (HPA): up to the lowest of the up window, down to the highest of the down window ----
    up_cut, down_cut = now - policy.scale_up_stabilization_seconds, now - down_window
    up_rec = min([r for t, r in recs[:-1] if t > up_cut] + [rec])
    down_rec = max([r for t, r in recs if t > down_cut] + [rec])
    target = min(max(current, up_rec), down_rec)

    if current < lo:
        return finish(lo, AT_MIN_REPLICAS, f"{numbers}; raising to min {lo}", True)
    if current > hi:
        return finish(hi, AT_MAX_REPLICAS, f"{numbers}; lowering to max {hi}", True)

    if target > current:
        cap = ready + max(policy.scale_up_min_step, math.ceil(policy.scale_up_max_factor * ready - _EPS))
        if cap <= current:
            msg = (
                f"{numbers}; recommend {raw}, waiting for {starting} starting replicas before requesting more"
            )
            return finish(current, REPLICAS_STARTING, msg, limited)
        target = min(target, cap)
        if limited and raw > hi and target == hi:
            reason, extra = AT_MAX_REPLICAS, f" (max {hi})"
        else:
            reason, extra = (QUEUE_ABOVE_TARGET if queue_high else LOAD_ABOVE_CAPACITY), ""
        return finish(target, reason, f"{numbers}; recommend {raw}, scaling up to {target}{extra}", limited)

    if target < current:
        window = f"highest in {_fmt(down_window)}s is {down_rec}"
        if queue_high:
            msg = f"{numbers}; recommend {raw}, not scaling down while the queue is above target"
            return finish(current, REPLICAS_STARTING if starting else QUEUE_ABOVE_TARGET, msg, limited)
        if (
            state.last_scale_down is not None
            and now - state.last_scale_down < policy.scale_down_interval_seconds
        ):
            since = _fmt(now - state.last_scale_down)
            msg = f"{numbers}; recommend {raw}, {window}; pacing: last scale-down {since}s ago"
            return finish(current, STABILIZING_SCALE_DOWN, msg, limited)
        step = max(policy.scale_down_max_step, math.ceil(policy.scale_down_max_fraction * current - _EPS), 1)
        target = max(target, current - step)
        reason = AT_MIN_REPLICAS if (target == lo and raw < lo) else LOAD_BELOW_CAPACITY
        return finish(
            target, reason, f"{numbers}; recommend {raw}, {window}; scaling down to {target}", limited
        )

    # ---- no change: say why ----
    if queue_high and starting:
        msg = f"{numbers}; recommend {raw}: the {starting} starting replicas will take the queue"
        return finish(current, REPLICAS_STARTING, msg, limited)
    if rec < current:
        msg = f"{numbers}; recommend {raw}, holding {current}: highest in {_fmt(down_window)}s is {down_rec}"
        return finish(current, STABILIZING_SCALE_DOWN, msg, limited)
    if rec > current:
        msg = (
            f"{numbers}; recommend {raw}, holding {current}: lowest in "
            f"{_fmt(policy.scale_up_stabilization_seconds)}s is {up_rec}"
        )
        return finish(current, STABILIZING_SCALE_UP, msg, limited)
    if limited:
        reason = AT_MAX_REPLICAS if raw > hi else AT_MIN_REPLICAS
        return finish(current, reason, f"{numbers}; recommend {raw}, limited to {current}", True)
    return finish(current, STEADY, f"{numbers}; {current} replicas fit the load", False)
