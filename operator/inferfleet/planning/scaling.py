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
  The slope is at most that of the latest half of the window (`trend_recent_half`): a line
  over five minutes still "rises" for minutes after a ramp has stopped, and extrapolating it
  bought replicas that the scale-down window then held;
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
* Saturation. With requests waiting and no slot free, completions are capped by the fleet:
  the flow balance then only bounds the arrivals from below. If at its pace over the last
  `arrival_window_seconds` the queue would not drain within `backlog_drain_seconds` (it
  hovers or grows), more arrive than complete, and every newcomer waits behind the backlog:
  it is sized to drain in `saturated_drain_seconds` instead (issue 16: a fleet with all 224
  slots busy and 51-82 waiting asked for 8 of the 12 replicas its load needed), and for the
  backlog it will have grown to by the time a replica requested now is Ready (its growth over
  the window times the expected start, `backlog_growth_share`): that is the queue the new
  replicas meet.
* KV cache. With `kv_cache_usage` (vLLM `vllm:kv_cache_usage_perc`, SGLang
  `sglang:token_usage`; TGI exports none) the fleet needs `ready * usage /
  kv_cache_utilization` replicas, and above `kv_cache_utilization` it is saturated even with
  slots free: long prompts fill the KV cache before the batch limit, a replica then holds only
  what it runs now, and the terms above count slots of that size. Scaling up sizes for the
  usage grown with the running trend (R' / R; while the trend above lacks its history, the
  larger of it and one over the shorter `kv_trend_window_seconds`, which needs a minute):
  the running requests hold the cache, and long reasoning decodes fill it within minutes of
  a fleet's start, a cold start too late for a fleet that waits for 90% (ServeGen's start).
  Missing KV data changes nothing.

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
  starts) of a scale-down, in a service whose queue has outrun its whole fleet (above target
  per replica, starting ones included) within `flap_evidence_seconds` (an hour), shows the
  window was too short for this load, so the window is multiplied by `flap_damping_factor` (up
  to `flap_max_window_seconds`) for the next `flap_memory_seconds`. Recurring bursts then
  keep their capacity instead of paying a cold start, a queue and a reversal each time; steady
  load keeps the spec's window, and so does a load whose replica came back before anyone
  waited, or whose only queue was one that the replicas already starting were sized for.

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

The code
--------
`compute_scaling_decision` runs the stages of `planning.scaling_stages` top to bottom: observe
(validate the sample, estimate the rates; missing data holds), recommend (the replicas the load
needs), stabilize (the up and down windows), limit rate (zero, min/max, step sizes) and explain
(the reason and the message). The types are in `planning.scaling_model`, where `ScalingPolicy`
holds the spec's settings and `ScalingTuning` the constants; the capacity model is
`planning.scaling_capacity`.
"""

from __future__ import annotations

from inferfleet.planning.scaling_capacity import estimate_flow, expected_running, replicas_for, running_trend
from inferfleet.planning.scaling_model import (
    DEFAULT_TUNING,
    Reason,
    ScalerState,
    ScalingDecision,
    ScalingPolicy,
    ScalingSample,
    ScalingTuning,
)
from inferfleet.planning.scaling_stages import (
    Fleet,
    decide,
    explain,
    hold_without_metrics,
    limit_rate,
    observe,
    recommend,
    remember,
    stabilize,
)

__all__ = [
    "DEFAULT_TUNING",
    "Reason",
    "ScalerState",
    "ScalingDecision",
    "ScalingPolicy",
    "ScalingSample",
    "ScalingTuning",
    "compute_scaling_decision",
    "estimate_flow",
    "expected_running",
    "replicas_for",
    "running_trend",
]


def compute_scaling_decision(
    sample: ScalingSample,
    policy: ScalingPolicy,
    current_replicas: int,
    ready_replicas: int,
    state: ScalerState,
    now: float,
    expected_start: float | None = None,
) -> tuple[ScalingDecision, ScalerState]:
    """One autoscaling decision and the next state; see the module docstring. `expected_start`:
    the seconds a replica requested now is expected to take to Ready (`planning.startup`)."""
    fleet = Fleet.of(policy, current_replicas, ready_replicas)
    obs = observe(sample, policy, fleet, state, now, expected_start)
    if obs is None:  # missing data: hold, and leave the windows as they were
        return decide(fleet, hold_without_metrics(fleet), None), state
    rec = recommend(obs, policy)
    win = stabilize(obs, rec, policy, state)
    limit = limit_rate(obs, rec, win, policy, state)
    decision = explain(obs, rec, win, policy, limit)
    return decision, remember(obs, win, decision.replicas, policy, state)
