"""The scaling decision in stages: observe → recommend → stabilize → limit rate → explain.

The shape of Kubernetes' HPA (`computeReplicasForMetrics` → `stabilizeRecommendation` →
`convertDesiredReplicasWithBehaviorRate`). Each stage is pure and reads only what the earlier
stages produced; `planning.scaling.compute_scaling_decision` runs them top to bottom, and
`remember` gives the state for the next tick. The model itself is described in
`planning.scaling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from inferfleet.planning.scaling_capacity import (
    EPS,
    Limits,
    compute_limits,
    estimate_flow,
    expected_running,
    has_trend_history,
    kv_replicas,
    planned_kv,
    replicas_for,
)
from inferfleet.planning.scaling_model import (
    LoadSamples,
    Reason,
    Recommendations,
    ScalerState,
    ScalingDecision,
    ScalingPolicy,
    ScalingSample,
    valid,
)


@dataclass(frozen=True)
class Fleet:
    """The replicas a tick starts from and the spec's bounds, normalized (no negatives, min <= max)."""

    current: int
    ready: int
    lo: int
    hi: int

    @classmethod
    def of(cls, policy: ScalingPolicy, current_replicas: int, ready_replicas: int) -> Fleet:
        current = max(0, current_replicas)
        hi = max(policy.max_replicas, 0)
        return cls(current, max(0, min(ready_replicas, current)), min(max(policy.min_replicas, 0), hi), hi)

    @property
    def starting(self) -> int:
        return self.current - self.ready

    @property
    def where(self) -> str:
        starting = f" ({self.starting} starting)" if self.starting else ""
        return f"{self.ready}/{self.current} replicas ready{starting}"


class Verdict(NamedTuple):
    """Replicas, the reason and the message: what one stage decided, and why."""

    replicas: int
    reason: Reason
    message: str
    limited: bool
    """min/max clipped the recommendation (the ScalingLimited condition)."""


@dataclass(frozen=True)
class Observation:
    """One tick's metrics, validated, with the rates the recommendation needs."""

    fleet: Fleet
    now: float
    waiting: float
    running: float
    planned_running: float
    """`running`, or more while it has been rising (the trend term)."""
    flow: tuple[float, float] | None
    """(arrival rate, service time), None without a usable completion rate."""
    last_active: float
    samples: LoadSamples
    """The load samples to remember: the kept window and this tick's."""
    queue_high: bool
    """More waiting requests than `target_queue_depth` per ready replica."""
    queue_outran: bool
    """...and per replica of the whole fleet, starting ones included: a queue that even the
    replicas on their way were not sized for (the evidence flap damping asks for)."""
    kv: float | None = None
    """Mean KV-cache usage (0..1) of the ready replicas; None when not reported."""
    planned_kv: float | None = None
    """`kv` grown with the running trend (`planned_kv`; until the trend over
    `trend_window_seconds` has its history, the larger of it and the trend over
    `kv_trend_window_seconds`): what scaling up sizes for."""
    limits: Limits | None = None
    """Slots per replica and the backlog's drain time in force (None: the spec's and the tuning's)."""
    saturation: str | None = None
    """Why the fleet is saturated (no free slot, a full KV cache; a queue that does not drain)."""

    @property
    def load(self) -> float:
        return self.waiting + self.running

    @property
    def idle_for(self) -> float:
        return self.now - self.last_active

    @property
    def numbers(self) -> str:
        kv = f", KV cache {self.kv:.0%}" if self.kv is not None else ""
        return f"queue {fmt(self.waiting)}, running {fmt(self.running)}{kv} on {self.fleet.where}"

    @property
    def rising(self) -> str | None:
        """What the trend sizes for, where it is more than the load now."""
        parts = []
        if self.planned_running >= self.running + 0.5:
            parts.append(f"running {self.planned_running:.0f}")
        if self.kv is not None and self.planned_kv is not None and self.planned_kv >= self.kv + 0.005:
            parts.append(f"KV cache {self.planned_kv:.0%}")
        return f"rising: sized for {' and '.join(parts)}" if parts else None

    @property
    def head(self) -> str:
        """The numbers, and what the trend sizes for and the saturation when there are any."""
        notes = [note for note in (self.rising, self.saturation) if note]
        return f"{self.numbers} ({'; '.join(notes)})" if notes else self.numbers


@dataclass(frozen=True)
class Recommendation:
    raw: int
    """Replicas the load needs at `target_utilization`, before any bound."""
    replicas: int
    """`raw` inside [floor, max]; the floor is 1 unless scale to zero is allowed and due."""
    keep: int
    """Replicas the load needs at `scale_down_utilization` (recorded for the down window)."""
    limited: bool
    may_be_zero: bool
    """min is 0 and scale to zero is configured."""
    idle_long: bool
    """...and the load has been zero for `scale_to_zero_after_seconds`."""


@dataclass(frozen=True)
class Stabilized:
    target: int
    """The current replicas moved towards the recommendation only as far as both windows agree."""
    up_rec: int
    """Lowest recommendation of the scale-up window."""
    down_rec: int
    """Highest recommendation (to keep) of the scale-down window."""
    down_window: float
    history: Recommendations
    """The recommendations to remember, this tick's included."""


def fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def hold_without_metrics(fleet: Fleet) -> Verdict:
    """Missing data never scales down: hold, corrected into [min, max] (the spec, not a metric)."""
    if fleet.current < fleet.lo:
        msg = f"queue metrics unavailable; raising to min {fleet.lo}"
        return Verdict(fleet.lo, Reason.AT_MIN_REPLICAS, msg, True)
    if fleet.current > fleet.hi:
        msg = f"queue metrics unavailable; lowering to max {fleet.hi}"
        return Verdict(fleet.hi, Reason.AT_MAX_REPLICAS, msg, True)
    msg = (
        f"queue metrics unavailable; holding {fleet.current} replicas ({fleet.where}), "
        "no scale-down without data"
    )
    return Verdict(fleet.current, Reason.METRICS_UNAVAILABLE, msg, False)


def observe(
    sample: ScalingSample,
    policy: ScalingPolicy,
    fleet: Fleet,
    state: ScalerState,
    now: float,
    expected_start: float | None = None,
) -> Observation | None:
    """The sample validated and its rates estimated; None when the queue metrics are missing.
    `expected_start` (seconds until a replica requested now is Ready, as learned) sets how far
    the trend looks ahead; None or invalid: `trend_lookahead_seconds`."""
    waiting, running = valid(sample.waiting), valid(sample.running)
    if fleet.current == 0 and running is None:
        running = 0.0  # no engine runs, so nothing runs; a gateway may still report a queue
    if waiting is None or running is None:
        return None
    tuning = policy.tuning
    keep_samples = max(tuning.trend_window_seconds, tuning.arrival_window_seconds)
    samples: LoadSamples = ()
    if keep_samples > 0:
        kept = (s for s in state.running_samples if 0 <= now - s[0] <= keep_samples)
        samples = (*kept, (now, running, waiting))
    trend = tuple((t, r) for t, r, _ in samples if now - t <= tuning.trend_window_seconds)
    last_active = state.last_active
    woken = state.last_replicas == 0 and fleet.current > 0  # by a gateway holding a request
    if last_active is None or waiting + running > 0 or woken:
        last_active = now  # a wake counts: its request may not be in the metrics yet
    kv = valid(sample.kv_cache_usage)
    kv = min(kv, 1.0) if kv is not None else None
    lookahead = lookahead_of(expected_start, policy)
    limits, saturation = compute_limits(waiting, running, kv, samples, fleet.ready, policy, now, lookahead)
    planned_running = expected_running(running, trend, policy, now, lookahead)
    kv_running = planned_running
    if not has_trend_history(trend, now, tuning.trend_window_seconds):
        short = expected_running(running, trend, policy, now, lookahead, tuning.kv_trend_window_seconds)
        kv_running = max(kv_running, short)
    return Observation(
        fleet=fleet,
        now=now,
        waiting=waiting,
        running=running,
        planned_running=planned_running,
        flow=estimate_flow(
            waiting, running, valid(sample.completion_rate), samples, policy, now, valid(sample.arrival_rate)
        ),
        last_active=last_active,
        samples=samples,
        queue_high=waiting > policy.target_queue_depth * max(fleet.ready, 1),
        queue_outran=waiting > policy.target_queue_depth * max(fleet.current, 1),
        kv=kv,
        planned_kv=planned_kv(kv, running, kv_running),
        limits=limits,
        saturation=saturation,
    )


def lookahead_of(expected_start: float | None, policy: ScalingPolicy) -> float:
    """The trend's horizon: the learned start of the next replica, within
    [`min_lookahead_seconds`, `max_lookahead_seconds`], else the constant."""
    tuning, start = policy.tuning, valid(expected_start)
    if start is None:
        return tuning.trend_lookahead_seconds
    return min(max(start, tuning.min_lookahead_seconds), tuning.max_lookahead_seconds)


def recommend(obs: Observation, policy: ScalingPolicy) -> Recommendation:
    """The replicas the load needs, to scale up to and to keep, inside the floor and max."""
    fleet, tuning = obs.fleet, policy.tuning
    may_be_zero = fleet.lo == 0 and policy.scale_to_zero_after_seconds is not None
    idle_long = may_be_zero and obs.load <= 0 and obs.idle_for >= (policy.scale_to_zero_after_seconds or 0.0)
    floor = fleet.lo if (fleet.lo > 0 or idle_long) else min(1, fleet.hi)
    raw, keep = (
        max(
            replicas_for(obs.waiting, obs.planned_running, policy, u, obs.flow, obs.limits),
            kv_replicas(kv, fleet.ready, policy, u),
        )
        # Scaling up follows the KV cache's trend; what to keep is what it holds now.
        for u, kv in ((tuning.target_utilization, obs.planned_kv), (tuning.scale_down_utilization, obs.kv))
    )
    replicas = min(max(raw, floor), fleet.hi)
    return Recommendation(
        raw=raw,
        replicas=replicas,
        keep=min(max(keep, floor), fleet.hi),
        limited=replicas != raw and (raw > fleet.hi or raw < fleet.lo),
        may_be_zero=may_be_zero,
        idle_long=idle_long,
    )


def stabilize(obs: Observation, rec: Recommendation, policy: ScalingPolicy, state: ScalerState) -> Stabilized:
    """HPA's windows: up to the lowest recommendation of the up window, down to the highest of
    the down window. A fresh state holds the current size for one window, as HPA's
    maybeInitScaleDownStabilizationWindow does: no history is not evidence of a lower load."""
    now, current = obs.now, obs.fleet.current
    down_window = policy.down_window(state, now)
    keep_for = max(policy.scale_up_stabilization_seconds, down_window)
    history = state.recommendations or ((now, current),)
    recs = tuple((t, r) for t, r in history if 0 <= now - t <= keep_for)
    if recs and recs[-1][1] == max(rec.keep, rec.replicas):
        recs = recs[:-1]  # a run of equal values keeps only its newest entry
    recs = (*recs, (now, max(rec.keep, rec.replicas)))
    up_cut, down_cut = now - policy.scale_up_stabilization_seconds, now - down_window
    up_rec = min([r for t, r in recs[:-1] if t > up_cut] + [rec.replicas])
    down_rec = max([r for t, r in recs if t > down_cut] + [rec.replicas])
    return Stabilized(min(max(current, up_rec), down_rec), up_rec, down_rec, down_window, recs)


def limit_rate(
    obs: Observation, rec: Recommendation, win: Stabilized, policy: ScalingPolicy, state: ScalerState
) -> Verdict | None:
    """Zero, min/max and the step sizes; None when they leave the fleet as it is."""
    fleet = obs.fleet
    zero = _to_or_from_zero(obs, rec, policy)
    if zero is not None:
        return zero
    if fleet.current < fleet.lo:
        return Verdict(fleet.lo, Reason.AT_MIN_REPLICAS, f"{obs.numbers}; raising to min {fleet.lo}", True)
    if fleet.current > fleet.hi:
        return Verdict(fleet.hi, Reason.AT_MAX_REPLICAS, f"{obs.numbers}; lowering to max {fleet.hi}", True)
    if win.target > fleet.current:
        return _limit_up(obs, rec, win, policy)
    if win.target < fleet.current:
        return _limit_down(obs, rec, win, policy, state)
    return None


def _to_or_from_zero(obs: Observation, rec: Recommendation, policy: ScalingPolicy) -> Verdict | None:
    fleet = obs.fleet
    if fleet.current == 0:
        if obs.load <= 0 and rec.may_be_zero:
            return Verdict(0, Reason.STEADY, f"no load; staying at zero replicas ({obs.numbers})", False)
        target = max(rec.replicas, 1)
        reason = Reason.AT_MIN_REPLICAS if rec.raw < fleet.lo else Reason.SCALE_FROM_ZERO
        return Verdict(target, reason, f"{obs.numbers}; scaling from zero to {target}", rec.limited)
    if rec.replicas == 0 and rec.idle_long:
        after = fmt(policy.scale_to_zero_after_seconds or 0.0)
        msg = f"no load for {fmt(obs.idle_for)}s (>= {after}s); scaling to zero"
        return Verdict(0, Reason.SCALE_TO_ZERO, msg, False)
    return None


def _limit_up(obs: Observation, rec: Recommendation, win: Stabilized, policy: ScalingPolicy) -> Verdict:
    """At most max(min step, factor * ready) on top of the READY replicas: a queue that grows
    during a cold start must not turn into replicas for the backlog, tick after tick."""
    fleet, tuning = obs.fleet, policy.tuning
    head = f"{obs.head}; recommend {rec.raw}"
    step = max(tuning.scale_up_min_step, math.ceil(tuning.scale_up_max_factor * fleet.ready - EPS))
    if fleet.ready + step <= fleet.current:
        msg = f"{head}, waiting for {fleet.starting} starting replicas before requesting more"
        return Verdict(fleet.current, Reason.REPLICAS_STARTING, msg, rec.limited)
    target = min(win.target, fleet.ready + step)
    if rec.limited and rec.raw > fleet.hi and target == fleet.hi:
        reason, extra = Reason.AT_MAX_REPLICAS, f" (max {fleet.hi})"
    else:
        reason = Reason.QUEUE_ABOVE_TARGET if obs.queue_high else Reason.LOAD_ABOVE_CAPACITY
        extra = ""
    return Verdict(target, reason, f"{head}, scaling up to {target}{extra}", rec.limited)


def _limit_down(
    obs: Observation, rec: Recommendation, win: Stabilized, policy: ScalingPolicy, state: ScalerState
) -> Verdict:
    """Never while the queue is above target; one step per interval, of at most
    max(step, ceil(fraction * current)) replicas."""
    fleet, tuning = obs.fleet, policy.tuning
    head = f"{obs.head}; recommend {rec.raw}"
    window = f"highest in {fmt(win.down_window)}s is {win.down_rec}"
    if obs.queue_high:
        reason = Reason.REPLICAS_STARTING if fleet.starting else Reason.QUEUE_ABOVE_TARGET
        msg = f"{head}, not scaling down while the queue is above target"
        return Verdict(fleet.current, reason, msg, rec.limited)
    last = state.last_scale_down
    if last is not None and obs.now - last < tuning.scale_down_interval_seconds:
        msg = f"{head}, {window}; pacing: last scale-down {fmt(obs.now - last)}s ago"
        return Verdict(fleet.current, Reason.STABILIZING_SCALE_DOWN, msg, rec.limited)
    step = max(tuning.scale_down_max_step, math.ceil(tuning.scale_down_max_fraction * fleet.current - EPS), 1)
    target = max(win.target, fleet.current - step)
    reason = (
        Reason.AT_MIN_REPLICAS if (target == fleet.lo and rec.raw < fleet.lo) else Reason.LOAD_BELOW_CAPACITY
    )
    return Verdict(target, reason, f"{head}, {window}; scaling down to {target}", rec.limited)


def explain(
    obs: Observation, rec: Recommendation, win: Stabilized, policy: ScalingPolicy, limit: Verdict | None
) -> ScalingDecision:
    """The decision: the rate limiter's verdict, or why the fleet keeps its size."""
    verdict = limit or _why_unchanged(obs, rec, win, policy)
    return decide(obs.fleet, verdict, rec.raw)


def _why_unchanged(obs: Observation, rec: Recommendation, win: Stabilized, policy: ScalingPolicy) -> Verdict:
    fleet = obs.fleet
    head = f"{obs.head}; recommend {rec.raw}"
    if obs.queue_high and fleet.starting:
        msg = f"{head}: the {fleet.starting} starting replicas will take the queue"
        return Verdict(fleet.current, Reason.REPLICAS_STARTING, msg, rec.limited)
    if rec.replicas < fleet.current:
        msg = f"{head}, holding {fleet.current}: highest in {fmt(win.down_window)}s is {win.down_rec}"
        return Verdict(fleet.current, Reason.STABILIZING_SCALE_DOWN, msg, rec.limited)
    if rec.replicas > fleet.current:
        up_window = fmt(policy.scale_up_stabilization_seconds)
        msg = f"{head}, holding {fleet.current}: lowest in {up_window}s is {win.up_rec}"
        return Verdict(fleet.current, Reason.STABILIZING_SCALE_UP, msg, rec.limited)
    if rec.limited:
        reason = Reason.AT_MAX_REPLICAS if rec.raw > fleet.hi else Reason.AT_MIN_REPLICAS
        return Verdict(fleet.current, reason, f"{head}, limited to {fleet.current}", True)
    return Verdict(
        fleet.current, Reason.STEADY, f"{obs.numbers}; {fleet.current} replicas fit the load", False
    )


def decide(fleet: Fleet, verdict: Verdict, recommendation: int | None) -> ScalingDecision:
    return ScalingDecision(*verdict, current_replicas=fleet.current, recommendation=recommendation)


def remember(
    obs: Observation, win: Stabilized, replicas: int, policy: ScalingPolicy, state: ScalerState
) -> ScalerState:
    """The state for the next tick. A scale-up within `flap_reversal_seconds` of a scale-down,
    in a service whose queue has outrun its whole fleet within `flap_evidence_seconds`, shows
    the down window was too short for this load: lengthen it for `flap_memory_seconds`."""
    now, current, tuning = obs.now, obs.fleet.current, policy.tuning
    out = replace(
        state,
        recommendations=win.history,
        last_active=obs.last_active,
        last_replicas=replicas,
        running_samples=obs.samples,
        last_overload=now if obs.queue_outran else state.last_overload,
    )
    if replicas != current:
        out = replace(out, last_scale_time=now)
    if replicas < current:
        return replace(out, last_scale_down=now)
    last_down = state.last_scale_down
    reversal = last_down is not None and now - last_down <= tuning.flap_reversal_seconds
    queued = out.last_overload is not None and now - out.last_overload <= tuning.flap_evidence_seconds
    if replicas > current and tuning.flap_damping_factor > 1 and reversal and queued:
        window = min(tuning.flap_max_window_seconds, win.down_window * tuning.flap_damping_factor)
        out = replace(out, scale_down_window=window, scale_down_window_until=now + tuning.flap_memory_seconds)
    return out
