"""Queue-depth autoscaling policy: one pure decision per tick.

`compute_scaling_decision(sample, policy, current, ready, state, now)` returns the replicas
`spec.replicas` should have and the state to persist in status for the next tick. It does no
IO and reads no clock: `now` (seconds, any epoch, monotonic across calls) is an input, so the
operator and the benchmark (`bench/autoscale`) run the very same code.

The model
---------
A replica runs up to `max_concurrent_requests` (C) requests at once; more wait in its queue.
From the waiting (W) and running (R) requests summed over the ready replicas the policy
computes how many replicas (ready + starting) the current load needs:

* `R / (C * target_utilization)`: running batches stay below `target_utilization` of the
  concurrency limit, leaving room for the arrivals of the next tick (this term sizes the fleet
  in steady state, when nothing waits, and decides how far it may shrink);
* `(R + W) / (C + target_queue_depth)`: if every replica ran a full batch, at most
  `target_queue_depth` requests per replica would still wait (this term reacts to a queue).

The larger of the two, rounded up, is the *recommendation*. It is a total, compared with
`current_replicas`, which includes replicas still starting: a queue that starting replicas
will absorb when they come up does not ask for more of them.

Cold starts take minutes, during which a queue keeps growing; a policy that converts that
backlog into replicas tick after tick provisions for the backlog, not for the load (HPA on a
queue metric does exactly this). So a scale-up may add at most
`max(scale_up_min_step, scale_up_max_factor * ready)` replicas on top of the READY ones: the
limit only rises as capacity actually arrives, which stops the runaway while still doubling a
warm fleet in one tick on a burst.

Stabilization follows Kubernetes HPA: every recommendation is recorded; a scale-up goes to the
lowest recommendation of the last `scale_up_stabilization_seconds` (0 = at once), a scale-down
only to the highest of the last `scale_down_stabilization_seconds`, so short dips and an
oscillating queue do not remove replicas that the next oscillation needs. On top of that the
policy never scales down while the queue is above target (the fleet is still catching up) and
removes at most `scale_down_max_step` replicas per decision, so a drop in load releases
capacity in steps and a rebound finds some of it still there.

Missing data (None, NaN, inf, negative) never scales down: the decision holds the current
replicas (corrected into [min, max], which is the spec, not a metric) with reason
`MetricsUnavailable`, and the state is returned unchanged so that a gap does not pollute the
windows. At zero replicas no engine reports metrics, so missing data holds zero; a positive
waiting sample there (a `scaling.query` override reading a gateway's queue, say) scales to at
least one replica.

Scale to zero happens only with `min_replicas == 0` and `scale_to_zero_after_seconds` set, after
the load (W + R) has been zero for that long. Otherwise the fleet keeps at least one replica.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# Reasons (UpperCamel, as Kubernetes Events and condition reasons).
QUEUE_ABOVE_TARGET = "QueueAboveTarget"
RUNNING_NEAR_LIMIT = "RunningNearLimit"
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


@dataclass(frozen=True)
class ScalingSample:
    """What Prometheus says about one service at one tick, summed over its ready pods."""

    waiting: float | None
    """Requests waiting in the engines' queues; None when missing, NaN/inf or stale."""
    running: float | None
    """Requests running in the engines' batches; None when missing."""


@dataclass(frozen=True)
class ScalingPolicy:
    """The spec's scaling settings plus the policy's tuning constants (defaults documented)."""

    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    """Waiting requests per replica to aim for."""
    max_concurrent_requests: int
    """Per replica: the engine's running-batch limit."""
    scale_up_stabilization_seconds: float = 0
    scale_down_stabilization_seconds: float = 300
    scale_to_zero_after_seconds: float | None = None
    target_utilization: float = 0.9
    """Share of `max_concurrent_requests` the running requests should fill per replica. Below 1
    so that a fleet at its size still absorbs the arrivals of one tick without a queue; not much
    below, because every point of headroom is paid in GPU-hours all day."""
    scale_up_max_factor: float = 1.0
    """A scale-up may add at most this many times the READY replicas (1.0 = double)..."""
    scale_up_min_step: int = 4
    """...or this many replicas, whichever is more. Based on ready, not desired, replicas so
    that replicas still starting do not raise the limit (no runaway during cold starts)."""
    scale_down_max_step: int = 2
    """At most this many replicas are removed per decision (0 = no limit)."""
    scale_down_utilization: float = 0.0
    hold_queue: bool = True
    queue_lookahead_seconds: float = 0.0
    record_scale_up: bool = False
    flap_damping_factor: float = 1.0
    flap_reversal_seconds: float = 600.0
    flap_max_window_seconds: float = 1200.0
    flap_memory_seconds: float = 1800.0
    trend_window_seconds: float = 0.0
    trend_lookahead_seconds: float = 120.0
    trend_max_growth: float = 0.25

    @property
    def longest_window(self) -> float:
        return max(self.scale_up_stabilization_seconds, self.scale_down_stabilization_seconds, 0.0)


@dataclass(frozen=True)
class ScalerState:
    """What the policy remembers between ticks; persisted in status so restarts keep windows."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommended replicas) inside the longest stabilization window, oldest first."""
    last_active: float | None = None
    """Last time the load (waiting + running) was > 0 (or first observation)."""
    last_scale_time: float | None = None
    running_samples: tuple[tuple[float, float], ...] = ()
    last_scale_down: float | None = None
    down_window: float | None = None
    down_window_until: float | None = None
    last_waiting: tuple[float, float] | None = None

    def to_status(self) -> dict[str, Any]:
        """JSON-serialisable form with camelCase keys (the inverse of `from_status`)."""
        return {
            "recommendations": [{"time": t, "replicas": r} for t, r in self.recommendations],
            "lastActive": self.last_active,
            "lastScaleTime": self.last_scale_time,
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> ScalerState:
        """Parse `to_status` output; anything missing or malformed is dropped, never raised."""
        if not isinstance(raw, Mapping):
            return cls()
        recs: list[tuple[float, int]] = []
        items = raw.get("recommendations")
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                t = _finite(item.get("time"))
                r = item.get("replicas")
                if t is None or isinstance(r, bool) or not isinstance(r, int) or r < 0:
                    continue
                recs.append((t, r))
        recs.sort(key=lambda rec: rec[0])
        return cls(
            recommendations=tuple(recs),
            last_active=_finite(raw.get("lastActive")),
            last_scale_time=_finite(raw.get("lastScaleTime")),
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
    """The replicas the decision was made from; `direction` compares against it."""
    recommendation: int | None = None
    """This tick's recommendation before stabilization and limits (None without metrics)."""

    @property
    def direction(self) -> str:
        """ "up", "down" or "none" relative to `current_replicas`."""
        if self.current_replicas is None or self.replicas == self.current_replicas:
            return "none"
        return "up" if self.replicas > self.current_replicas else "down"


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _valid(value: float | None) -> float | None:
    """A usable gauge value, or None for missing, NaN, inf and negative readings."""
    f = _finite(value)
    return f if f is not None and f >= 0 else None


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def _trend(samples: tuple[tuple[float, float], ...], now: float) -> tuple[float, float] | None:
    """Least-squares (value at now, slope) of the samples, or None with too few of them."""
    if len(samples) < 4:
        return None
    ts = [t - now for t, _ in samples]
    vs = [v for _, v in samples]
    n = len(ts)
    mt, mv = sum(ts) / n, sum(vs) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var <= 0:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / var
    return mv - slope * mt, slope


def recommend_replicas(
    waiting: float,
    running: float,
    policy: ScalingPolicy,
    samples: tuple[tuple[float, float], ...] = (),
    now: float = 0.0,
    utilization: float | None = None,
) -> int:
    """Replicas (ready + starting) the load needs, before bounds, windows and step limits."""
    c = float(max(policy.max_concurrent_requests, 1))
    expected = running
    tr = _trend(samples, now) if policy.trend_window_seconds > 0 else None
    if tr is not None and tr[1] > 0 and now - samples[0][0] >= policy.trend_window_seconds / 2:
        grow = min(tr[1] * policy.trend_lookahead_seconds, policy.trend_max_growth * max(tr[0], 0.0))
        expected = max(running, tr[0] + grow)
    by_running = expected / (c * (utilization or policy.target_utilization))
    by_queue = (running + waiting) / (c + max(policy.target_queue_depth, 0.0))
    return max(0, math.ceil(max(by_running, by_queue) - _EPS))


def _prune(recs: tuple[tuple[float, int], ...], now: float, window: float) -> tuple[tuple[float, int], ...]:
    return tuple((t, r) for t, r in recs if now - t <= window and t <= now)


def _record(recs: tuple[tuple[float, int], ...], now: float, rec: int) -> tuple[tuple[float, int], ...]:
    # A run of equal recommendations is kept as its newest entry only: the min or max over any
    # window ending now is unchanged, and the list stays as short as the number of changes.
    if recs and recs[-1][1] == rec:
        recs = recs[:-1]
    return (*recs, (now, rec))


def compute_scaling_decision(
    sample: ScalingSample,
    policy: ScalingPolicy,
    current_replicas: int,
    ready_replicas: int,
    state: ScalerState,
    now: float,
) -> tuple[ScalingDecision, ScalerState]:
    """One autoscaling decision; see the module docstring for the model and its reasons."""
    current = max(0, current_replicas)
    ready = max(0, min(ready_replicas, current))
    starting = current - ready
    lo, hi = max(0, policy.min_replicas), max(policy.max_replicas, 0)
    lo = min(lo, hi)
    waiting, running = _valid(sample.waiting), _valid(sample.running)
    if current == 0 and running is None:
        running = 0.0  # no engines run, so nothing runs; a gateway may still report a queue
    where = f"{ready}/{current} replicas ready" + (f" ({starting} starting)" if starting else "")

    def decide(replicas: int, reason: str, message: str, limited: bool, rec: int | None) -> ScalingDecision:
        return ScalingDecision(replicas, reason, message, limited, current, rec)

    # ---- missing data: hold (inside [min, max]); the state is kept as it was ----
    if waiting is None or running is None:
        if current < lo:
            return decide(lo, AT_MIN_REPLICAS, f"metrics unavailable; raising to min {lo}", True, None), state
        if current > hi:
            return decide(
                hi, AT_MAX_REPLICAS, f"metrics unavailable; lowering to max {hi}", True, None
            ), state
        msg = f"queue metrics unavailable; holding {current} replicas ({where}), never scaling down on missing data"
        return decide(current, METRICS_UNAVAILABLE, msg, False, None), state

    load = waiting + running
    last_active = now if (load > 0 or state.last_active is None) else state.last_active
    base_down = policy.scale_down_stabilization_seconds
    down_window = base_down
    if (
        state.down_window is not None
        and state.down_window_until is not None
        and now < state.down_window_until
    ):
        down_window = max(base_down, state.down_window)
    recs = _prune(state.recommendations, now, max(policy.longest_window, down_window))
    numbers = f"queue {_fmt(waiting)}, running {_fmt(running)} on {where}"

    # ---- the floor: zero only when scale-to-zero is allowed and the idle period has passed ----
    may_be_zero = policy.min_replicas <= 0 and policy.scale_to_zero_after_seconds is not None
    idle_for = now - last_active
    idle_long = may_be_zero and load <= 0 and idle_for >= (policy.scale_to_zero_after_seconds or 0.0)
    floor = lo if (lo > 0 or idle_long) else min(1, hi)

    samples = tuple((t, v) for t, v in state.running_samples if 0 <= now - t <= policy.trend_window_seconds)
    samples = (*samples, (now, running)) if policy.trend_window_seconds > 0 else ()
    w_eff = waiting
    if policy.queue_lookahead_seconds > 0 and state.last_waiting is not None and waiting > policy.target_queue_depth * max(ready, 1):
        t_prev, w_prev = state.last_waiting
        if 0 < now - t_prev <= 60 and waiting > w_prev:
            w_eff = waiting + (waiting - w_prev) / (now - t_prev) * policy.queue_lookahead_seconds
    raw = recommend_replicas(w_eff, running, policy, samples, now)
    rec = min(max(raw, floor), hi)
    limited = raw != rec and not (raw < floor and floor == 1 and lo == 0)
    hold = rec
    if policy.scale_down_utilization > 0:
        hold = min(
            max(
                recommend_replicas(waiting, running, policy, samples, now, policy.scale_down_utilization),
                floor,
            ),
            hi,
        )
    recs = _record(recs, now, hold)
    new_state = replace(state, recommendations=recs, last_active=last_active, running_samples=samples, last_waiting=(now, waiting))

    def finish(replicas: int, reason: str, message: str, lim: bool) -> tuple[ScalingDecision, ScalerState]:
        out = new_state if replicas == current else replace(new_state, last_scale_time=now)
        if replicas < current:
            out = replace(out, last_scale_down=now)
        if replicas > current and policy.record_scale_up and out.recommendations[-1][1] < replicas:
            out = replace(out, recommendations=(*out.recommendations[:-1], (now, replicas)))
        elif (
            replicas > current
            and policy.flap_damping_factor > 1
            and state.last_scale_down is not None
            and now - state.last_scale_down <= policy.flap_reversal_seconds
        ):
            out = replace(
                out,
                down_window=min(policy.flap_max_window_seconds, down_window * policy.flap_damping_factor),
                down_window_until=now + policy.flap_memory_seconds,
            )
        return decide(replicas, reason, message, lim, raw), out

    if current == 0:
        if load <= 0 and may_be_zero:
            return finish(0, STEADY, f"no load; staying at zero replicas ({numbers})", False)
        rec = max(rec, 1)
        reason = AT_MIN_REPLICAS if (limited and raw < lo) else SCALE_FROM_ZERO
        return finish(rec, reason, f"{numbers}; scaling from zero to {rec}", limited)
    if rec == 0 and idle_long:
        msg = f"no load for {_fmt(idle_for)}s (>= {_fmt(policy.scale_to_zero_after_seconds or 0)}s); scaling to zero"
        return finish(0, SCALE_TO_ZERO, msg, False)

    # ---- HPA-style stabilization over the recorded recommendations ----
    up_cut = now - policy.scale_up_stabilization_seconds
    down_cut = now - down_window
    up_rec = min([r for t, r in recs[:-1] if t >= up_cut] + [rec])
    down_rec = max([r for t, r in recs if t >= down_cut] + [rec])
    target = min(max(current, up_rec), down_rec)
    target = min(max(target, lo), hi)  # a current outside [min, max] is corrected regardless

    if target > current:
        cap = ready + max(policy.scale_up_min_step, math.ceil(policy.scale_up_max_factor * ready - _EPS))
        if current < lo:
            return finish(max(target, lo), AT_MIN_REPLICAS, f"{numbers}; raising to min {lo}", True)
        if target > cap:
            if cap <= current:
                msg = (
                    f"{numbers}; want {target} but {starting} starting replicas must come up "
                    f"before more than {cap} are requested"
                )
                return finish(current, REPLICAS_STARTING, msg, limited)
            target = cap
        reason = (
            AT_MAX_REPLICAS
            if (limited and raw > hi)
            else (
                QUEUE_ABOVE_TARGET
                if waiting > policy.target_queue_depth * max(ready, 1)
                else RUNNING_NEAR_LIMIT
            )
        )
        msg = f"{numbers}; recommend {raw}, scaling up to {target}"
        if reason == AT_MAX_REPLICAS:
            msg += f" (max {hi})"
        return finish(target, reason, msg, limited)

    if target < current:
        if current > hi:
            return finish(hi, AT_MAX_REPLICAS, f"{numbers}; lowering to max {hi}", True)
        if waiting > policy.target_queue_depth * max(ready, 1):
            msg = f"{numbers}; queue above target {_fmt(policy.target_queue_depth)}/replica, not scaling down"
            return finish(current, QUEUE_ABOVE_TARGET, msg, limited)
        step = policy.scale_down_max_step
        if step > 0:
            target = max(target, current - step)
        reason = AT_MIN_REPLICAS if (limited and raw < lo) else LOAD_BELOW_CAPACITY
        msg = (
            f"{numbers}; recommend {raw}, highest in {_fmt(policy.scale_down_stabilization_seconds)}s "
            f"{down_rec}, scaling down to {target}"
        )
        return finish(target, reason, msg, limited)

    # ---- no change: explain why ----
    if rec < current:
        msg = (
            f"{numbers}; recommend {raw}, holding {current}: highest recommendation in the last "
            f"{_fmt(policy.scale_down_stabilization_seconds)}s is {down_rec}"
        )
        return finish(current, STABILIZING_SCALE_DOWN, msg, limited)
    if rec > current:
        msg = (
            f"{numbers}; recommend {raw}, holding {current}: lowest recommendation in the last "
            f"{_fmt(policy.scale_up_stabilization_seconds)}s is {up_rec}"
        )
        return finish(current, STABILIZING_SCALE_UP, msg, limited)
    if limited:
        reason = AT_MAX_REPLICAS if raw > hi else AT_MIN_REPLICAS
        return finish(current, reason, f"{numbers}; recommend {raw}, limited to {current}", True)
    return finish(current, STEADY, f"{numbers}; {current} replicas fit the load", False)
