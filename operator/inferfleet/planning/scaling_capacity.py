"""The capacity model: from a load to the replicas it needs (see `planning.scaling`)."""

from __future__ import annotations

import math
from typing import NamedTuple

from inferfleet.planning.scaling_model import LoadSamples, Samples, ScalingPolicy

EPS = 1e-9
_MIN_TREND_SAMPLES = 4


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


def has_trend_history(samples: Samples, now: float, window: float) -> bool:
    """Whether the samples reach back half of a trend `window` (what a trend needs)."""
    return window > 0 and bool(samples) and now - samples[0][0] >= window / 2


def expected_running(
    running: float,
    samples: Samples,
    policy: ScalingPolicy,
    now: float,
    lookahead: float | None = None,
    window: float | None = None,
) -> float:
    """Running requests to plan for: the current ones, or more while they have been rising,
    extrapolated `lookahead` seconds (the next replica's expected start; None:
    `trend_lookahead_seconds`). `window` (None: `trend_window_seconds`) sets the history needed,
    half of it, and the recent half whose slope caps the fit's."""
    tuning = policy.tuning
    ahead = tuning.trend_lookahead_seconds if lookahead is None else lookahead
    window = tuning.trend_window_seconds if window is None else window
    if not has_trend_history(samples, now, window):
        return running  # no trend before half a window of history
    fit = running_trend(samples, now)
    if fit is None or fit[1] <= 0:
        return running  # not rising, or no longer: the drop after a burst is not a ramp
    level, slope = fit
    recent = running_trend(tuple(s for s in samples if now - s[0] <= window / 2), now)
    if tuning.trend_recent_half and recent is not None and recent[1] < slope:
        level, slope = recent[0], max(recent[1], 0.0)  # a ramp that has stopped is not extrapolated
    growth = min(slope * ahead, tuning.trend_max_growth * max(running, 0.0))
    return max(running, level + growth)


def replicas_for(
    waiting: float,
    running: float,
    policy: ScalingPolicy,
    utilization: float,
    flow: tuple[float, float] | None = None,
    limits: Limits | None = None,
) -> int:
    """Replicas (ready + starting) for this load at this batch utilization, before any limit.

    With `flow` (arrival rate, service time) the queue is sized by Little's law: the arrivals
    need `arrival * service` batch slots, and the backlog `waiting * service` slot-seconds
    drained over `backlog_drain_seconds` (`saturated_drain_seconds` when it does not drain).
    Without it (no completion counter) the waiting requests count as load per replica,
    `(running + waiting) / (C + target_queue_depth)`. `limits` (`compute_limits`) give the
    slots per replica and the drain time; None: C slots, `backlog_drain_seconds`.
    """
    limits = limits or Limits(
        float(max(policy.max_concurrent_requests, 1)), policy.tuning.backlog_drain_seconds
    )
    c = max(limits.slots, 1.0)
    u = max(utilization, EPS)
    by_running = running / (c * u)
    if flow is None:
        by_queue = (running + waiting) / (c + max(policy.target_queue_depth, 0.0))
    else:
        arrival, service = flow
        backlog = waiting if limits.backlog is None else max(waiting, limits.backlog)
        by_queue = arrival * service / (c * u) + backlog * service / (c * max(limits.drain_seconds, EPS))
    return max(0, math.ceil(max(by_running, by_queue) - EPS))


class Limits(NamedTuple):
    """What a replica holds and how fast its backlog must go, as the fleet's state says."""

    slots: float
    """Requests a replica runs at once: the batch limit, or fewer when the KV cache is full."""
    drain_seconds: float
    """The backlog is sized to drain in this long."""
    backlog: float | None = None
    """The backlog to size for, when it is not the waiting requests now (`compute_limits`)."""


def compute_limits(
    waiting: float,
    running: float,
    kv: float | None,
    samples: LoadSamples,
    ready: int,
    policy: ScalingPolicy,
    now: float,
    lookahead: float = 0.0,
) -> tuple[Limits, str | None]:
    """The slots per replica and the backlog's drain time, and why the fleet is saturated.

    Saturated: requests wait and no slot is free (at most one per replica: a scrape may see a
    replica between two requests), or the KV cache is fuller than `kv_cache_utilization`;
    then a replica holds what it runs now. A saturated queue that, at its pace over the last
    `arrival_window_seconds`, would not drain within `backlog_drain_seconds` (it hovers or
    grows while completions are capped by the fleet: more arrive than completions show) is
    sized to drain in `saturated_drain_seconds`, and for the backlog it will have grown to at
    that pace by the time a replica requested now is Ready (`lookahead`, the learned start):
    the replicas asked for now arrive to that queue, not to today's. On code x10 at t = 210 s
    (queue 524, growing 12/s after an idle minute) this asks for 4 replicas where the queue
    alone asked for 3. Without a window of history, no pace.
    """
    tuning, c = policy.tuning, float(max(policy.max_concurrent_requests, 1))
    kv_full = kv is not None and kv >= tuning.kv_cache_utilization
    if waiting <= 0 or ready <= 0 or not (kv_full or running >= (c - 1) * ready):
        return Limits(c, tuning.backlog_drain_seconds), None
    why = f"KV cache {kv:.0%} full" if kv_full and kv is not None else "every slot busy"
    slots = min(c, max(running / ready, 1.0)) if kv_full else c
    inside = [(t, w) for t, _, w in samples if 0 < now - t <= tuning.arrival_window_seconds]
    if not inside:
        return Limits(slots, tuning.backlog_drain_seconds), f"saturated: {why}"
    t0, w0 = inside[0]
    pace = (w0 - waiting) / (now - t0)  # drained per second; < 0 while the queue grows
    if waiting - pace * tuning.backlog_drain_seconds <= 0:
        return Limits(slots, tuning.backlog_drain_seconds), f"saturated: {why}, the queue drains"
    # The queue keeps growing at this pace until the replicas requested now are Ready
    # (`lookahead`, the expected start): that backlog, not today's, is what they must drain.
    backlog = waiting + max(0.0, -pace) * lookahead * tuning.backlog_growth_share
    return (
        Limits(slots, tuning.saturated_drain_seconds, backlog),
        f"saturated: {why}, the queue does not drain",
    )


def planned_kv(kv: float | None, running: float, planned_running: float) -> float | None:
    """The KV-cache usage to scale up for: the running requests hold the KV cache, so where the
    trend plans for more of them (`expected_running`), proportionally more of it (above 1: more
    than the ready replicas hold). A fleet that fills its KV cache from the start (long
    reasoning decodes) is then sized as it fills, not once it is full and a start too late."""
    if kv is None or running <= 0 or planned_running <= running:
        return kv
    return kv * planned_running / running


def kv_replicas(kv: float | None, ready: int, policy: ScalingPolicy, utilization: float) -> int:
    """Replicas that would hold the running requests' KV cache at `kv_cache_utilization`
    (lowered like the slots' `utilization` is for keeping replicas); 0 without KV data."""
    tuning = policy.tuning
    if kv is None or ready <= 0:
        return 0
    share = tuning.kv_cache_utilization * utilization / max(tuning.target_utilization, EPS)
    return max(0, math.ceil(ready * kv / max(share, EPS) - EPS))


def estimate_flow(
    waiting: float,
    running: float,
    rate: float | None,
    samples: LoadSamples,
    policy: ScalingPolicy,
    now: float,
    counted_arrivals: float | None = None,
) -> tuple[float, float] | None:
    """(arrival rate, service time) over the last `arrival_window_seconds`, or None.

    `samples` are the policy's (time, running, waiting), oldest first, this tick's last.

    A flow balance and Little's law: arrivals = completions (the engines' success counter
    rate) + the growth of running + waiting over the window, or the arrivals a gateway counted
    (`counted_arrivals`) when one serves the service; service time = mean running
    requests over the window / completion rate. None without a completion rate, or when
    requests run but none finished in the window (the service time is unknown).
    """
    window_seconds = policy.tuning.arrival_window_seconds
    if rate is None or window_seconds <= 0:
        return None
    window = [e for e in samples if now - e[0] <= window_seconds] or [(now, running, waiting)]
    mean_running = sum(r for _, r, _ in window) / len(window)
    if rate <= EPS or mean_running <= EPS:
        return (0.0, 0.0) if running + waiting <= 0 else None
    if counted_arrivals is not None:  # counted at the gateway's door: no estimate needed
        return max(0.0, counted_arrivals), mean_running / rate
    t0, r0, w0 = window[0]
    growth = ((running + waiting) - (r0 + w0)) / (now - t0) if now > t0 else 0.0
    return max(0.0, rate + growth), mean_running / rate
