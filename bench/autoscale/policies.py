"""The policies compared: inferfleet's, HPA, KEDA, KubeAI, static peak and an oracle.

Every autoscaler gets the same fleet limits (min/max replicas) and the same target of waiting
requests per replica, and starts with the same ready replicas and a history "as if it had been
running at that size", so none pays for a cold start at t=0 or scales down in its first tick.

* `inferfleet`: `inferfleet.planning.scaling.compute_scaling_decision`, the function the
  operator calls, every 15 s on what Prometheus shows of the engines (waiting, running,
  completion rate): a service without inferfleet's gateway.
* `inferfleet-gateway`: the same policy and ticks on what the operator reads when its gateway
  serves the service: the sample is combined by `planning.queue_queries.compute_fleet_sample`
  (the queue is the gateway's; the engines' running requests, or the gateway's in-flight ones
  when no replica reports) and carries the arrival rate counted at the door, which replaces
  the flow balance's estimate (completions + growth of the load).
* `hpa`: the Kubernetes HPA algorithm (pkg/controller/podautoscaler) with default behaviour on
  a Pods metric, the average waiting requests per pod (via prometheus-adapter), target =
  the queue target: `calcPlainMetricReplicas` (10% tolerance; pods without metrics, i.e. still
  starting, count as 0 on a scale-up and as at-target on a scale-down, and no change if that
  flips the direction), then stabilization (up 0 s, down 300 s: highest recommendation) and the
  default rate policies (up: max of +100% and +4 pods per 15 s; down: 100% per 15 s), synced
  every 15 s.
* `keda`: a ScaledObject with the Prometheus scaler and defaults (pollingInterval 30 s,
  cooldownPeriod 300 s, ignoreNullValues true so an empty result reads 0). KEDA hands the HPA
  an External metric with an AverageValue target: desired = ceil(total waiting / target)
  unless within 10% of the current replicas (`GetExternalPerPodMetricReplicas`), then the
  same default HPA behaviour, synced every 15 s (the metrics server queries Prometheus on each
  HPA request; useCachedMetrics is off by default). pollingInterval and cooldownPeriod only
  drive activation 0 <-> 1, which matters only with min replicas 0.
* `kubeai`: KubeAI's model autoscaler (internal/modelautoscaler): every 10 s it scrapes the
  pods' active requests (running + waiting), appends them to a simple moving average over
  10 minutes, and wants ceil(average / targetRequests) replicas; a scale-down happens only
  after ceil(scaleDownDelaySeconds / interval) consecutive lower recommendations
  (scaleDownDelaySeconds default 30 s). targetRequests is set to the engine's concurrency
  limit (KubeAI's default of 100 assumes vLLM's larger batches).
* `static-peak`: the most replicas the oracle ever needs, all ready for the whole run.
* `oracle`: perfect foresight of arrivals, sizes and its own cold starts. `oracle_needs` finds,
  window by window (10 s), the fewest replicas that start every request within the SLO, on the
  same engine model; `oracle_plan` gives each replica slot k the times when at least k are
  needed, bridges a gap shorter than the cold start of the replica that would replace it
  (keeping the replica costs less than the new one's cold start), and requests each replica
  exactly one cold start before it is needed. `cli.run_oracle` runs such plans with longer gaps
  bridged (ORACLE_BRIDGES_S) and with or without taking back a replica still finishing its
  requests, and keeps the cheapest that meets the SLO. It may queue up to the SLO, so it is a
  lower bound on GPU-hours at that SLO rather than a zero-queue fleet.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass, field, replace

from bench.autoscale.nodes import slot_start
from bench.autoscale.sim import Fleet, Observation, Plan, SimParams
from bench.autoscale.workload import Workload
from inferfleet.planning.queue_queries import compute_fleet_sample
from inferfleet.planning.scaling import ScalerState, ScalingPolicy, ScalingSample, compute_scaling_decision
from inferfleet.planning.startup import (
    NodeWarmth,
    PodStart,
    StartupStats,
    compute_expected_start,
    compute_node_warmth,
    compute_startup_stats,
    compute_warm_room,
)

HPA_TOLERANCE = 0.1
HPA_SYNC_S = 15.0
HPA_DOWN_WINDOW_S = 300.0
HPA_UP_WINDOW_S = 0.0
HPA_POLICY_PERIOD_S = 15.0
KEDA_POLLING_S = 30.0
KEDA_COOLDOWN_S = 300.0
KUBEAI_INTERVAL_S = 10.0
KUBEAI_WINDOW_S = 600.0
KUBEAI_SCALE_DOWN_DELAY_S = 30.0
INFERFLEET_TICK_S = 15.0


@dataclass(frozen=True)
class FleetLimits:
    min_replicas: int
    max_replicas: int
    target_queue_depth: float
    concurrency: int


# ------------------------------------------------------------------------------------ inferfleet


def build_engine_sample(obs: Observation) -> ScalingSample:
    """What the operator reads of a service without a gateway: the engines' series."""
    return ScalingSample(obs.waiting, obs.running, obs.completion_rate, kv_cache_usage=obs.kv_cache_usage)


def build_gateway_sample(obs: Observation) -> ScalingSample:
    """What the operator reads of a service behind its gateway, combined as the operator does.

    The fleet's one queue is the gateway's, so the engines report none waiting."""
    values: dict[str, float | None] = {}
    if obs.ready > 0:
        values |= {
            "waiting": 0.0,
            "running": obs.running,
            "completion_rate": obs.completion_rate,
            "kv_cache_usage": obs.kv_cache_usage,
        }
    values |= {
        "gateway_waiting": obs.gateway_queued,
        "gateway_running": obs.gateway_in_flight,
        "arrival_rate": obs.arrival_rate,
    }
    q = compute_fleet_sample(values)
    if q is None:
        return ScalingSample(None, None)
    return ScalingSample(q.waiting, q.running, q.completion_rate, q.arrival_rate, q.kv_cache_usage)


class InferfleetPolicy:
    """The operator's policy, as the operator calls it; `gateway`: with its gateway's signals."""

    uses_prometheus = True

    def __init__(
        self,
        policy: ScalingPolicy,
        initial: int,
        interval: float = INFERFLEET_TICK_S,
        gateway: bool = False,
        learn_starts: bool = True,
    ) -> None:
        self.name = "inferfleet-gateway" if gateway else "inferfleet"
        self.policy = policy
        self.interval = interval
        self.gateway = gateway
        self.state = ScalerState(recommendations=((0.0, initial),), last_active=0.0)
        self.reasons: dict[str, int] = {}
        self.learn_starts = learn_starts
        self.startup = StartupStats()
        self.warmth: NodeWarmth | None = None
        self.expected_start: float | None = None

    def see_pods(
        self, now: float, pods: list[PodStart], present: list[str], serving: list[str], cache: bool
    ) -> None:
        """What the operator learns each tick (`planning.startup`, the same calls): the pods'
        starts, warm or cold by the nodes' caches, and the next replica's expected start."""
        if not self.learn_starts:
            return
        self.warmth = compute_node_warmth(self.warmth, present, now)
        self.startup = compute_startup_stats(self.startup, pods, cache, self.warmth)
        self.expected_start = compute_expected_start(self.startup, compute_warm_room(present, serving))

    def sample(self, obs: Observation) -> ScalingSample:
        return build_gateway_sample(obs) if self.gateway else build_engine_sample(obs)

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        decision, self.state = compute_scaling_decision(
            self.sample(obs),
            self.policy,
            current,
            ready,
            self.state,
            now,
            self.expected_start,
        )
        self.reasons[decision.reason] = self.reasons.get(decision.reason, 0) + 1
        return decision.replicas


def inferfleet_policy(limits: FleetLimits) -> ScalingPolicy:
    """The ScalingPolicy the benchmark runs: the spec's defaults and the policy's defaults."""
    return ScalingPolicy(
        min_replicas=limits.min_replicas,
        max_replicas=limits.max_replicas,
        target_queue_depth=limits.target_queue_depth,
        max_concurrent_requests=limits.concurrency,
    )


# ------------------------------------------------------------------------------------------ HPA


@dataclass
class HpaBehavior:
    """HPA's normalizeDesiredReplicasWithBehaviors with the default behaviour."""

    min_replicas: int
    max_replicas: int
    up_window: float = HPA_UP_WINDOW_S
    down_window: float = HPA_DOWN_WINDOW_S
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    def _changed_in_period(self, events: list[tuple[float, int]], now: float) -> int:
        return sum(n for t, n in events if now - t < HPA_POLICY_PERIOD_S)

    def normalize(self, now: float, current: int, prenormalized: int) -> int:
        # stabilizeRecommendationWithBehaviors
        up_rec = down_rec = prenormalized
        for t, rec in self.recommendations:
            if t > now - self.up_window:
                up_rec = min(up_rec, rec)
            if t > now - self.down_window:
                down_rec = max(down_rec, rec)
        keep = max(self.up_window, self.down_window)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - keep]
        self.recommendations.append((now, prenormalized))
        desired = current
        desired = max(desired, up_rec)
        desired = min(desired, down_rec)
        # convertDesiredReplicasWithBehaviorRate, default policies
        added = self._changed_in_period(self.up_events, now)
        deleted = self._changed_in_period(self.down_events, now)
        start = current - added + deleted
        if desired > current:
            limit = max(start + 4, math.ceil(start * 2.0))  # Pods 4 / Percent 100, selectPolicy Max
            limit = max(limit, current)
            desired = min(desired, min(self.max_replicas, limit))
        elif desired < current:
            limit = min(current, int(start * (1 - 1.0)))  # Percent 100, selectPolicy Max
            desired = max(desired, max(self.min_replicas, limit))
        desired = min(max(desired, self.min_replicas), self.max_replicas)
        if desired > current:
            self.up_events.append((now, desired - current))
        elif desired < current:
            self.down_events.append((now, current - desired))
        self.up_events = [(t, k) for t, k in self.up_events if now - t < HPA_POLICY_PERIOD_S]
        self.down_events = [(t, k) for t, k in self.down_events if now - t < HPA_POLICY_PERIOD_S]
        return desired


class HpaPolicy:
    """HPA on a Pods metric: average waiting requests per pod, AverageValue = queue target."""

    uses_prometheus = True

    def __init__(self, limits: FleetLimits, initial: int) -> None:
        self.name = "hpa"
        self.interval = HPA_SYNC_S
        self.target = limits.target_queue_depth
        self.behavior = HpaBehavior(limits.min_replicas, limits.max_replicas)
        self.behavior.recommendations.append((0.0, initial))

    def replicas_for_metric(self, obs: Observation, current: int) -> int | None:
        """calcPlainMetricReplicas; None when no ready pod reported (the HPA skips the sync)."""
        if obs.waiting is None or obs.ready == 0:
            return None
        ready = obs.ready
        missing = max(0, current - ready)
        per_pod = obs.waiting / ready
        ratio = per_pod / self.target
        if missing == 0:
            if abs(1.0 - ratio) <= HPA_TOLERANCE:
                return current
            return math.ceil(ratio * ready)
        total = obs.waiting + (missing * self.target if ratio < 1.0 else 0.0)
        new_ratio = total / (ready + missing) / self.target
        if (
            abs(1.0 - new_ratio) <= HPA_TOLERANCE
            or (ratio < 1.0 and new_ratio > 1.0)
            or (ratio > 1.0 and new_ratio < 1.0)
        ):
            return current
        new = math.ceil(new_ratio * (ready + missing))
        if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
            return current
        return new

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        if current > self.behavior.max_replicas:
            return self.behavior.max_replicas
        if current < self.behavior.min_replicas:
            return self.behavior.min_replicas
        rec = self.replicas_for_metric(obs, current)
        if rec is None:
            return current
        return self.behavior.normalize(now, current, rec)


class KedaPolicy:
    """KEDA Prometheus scaler: External metric = total waiting, AverageValue = queue target."""

    uses_prometheus = True

    def __init__(self, limits: FleetLimits, initial: int) -> None:
        self.name = "keda"
        self.interval = HPA_SYNC_S
        self.target = limits.target_queue_depth
        self.min_replicas = limits.min_replicas
        self.behavior = HpaBehavior(max(1, limits.min_replicas), limits.max_replicas)
        self.behavior.recommendations.append((0.0, initial))
        self.last_poll = -math.inf
        self.last_active = 0.0

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        value = obs.waiting if obs.waiting is not None else 0.0  # ignoreNullValues: empty -> 0
        if now - self.last_poll >= KEDA_POLLING_S:  # the KEDA operator's activation loop
            self.last_poll = now
            if value > 0:
                self.last_active = now
            if current == 0:
                return 1 if value > 0 else 0
            if self.min_replicas == 0 and now - self.last_active >= KEDA_COOLDOWN_S:
                return 0
        if current == 0:
            return 0
        # GetExternalPerPodMetricReplicas with statusReplicas = pods that exist (incl. starting)
        rec = current
        ratio = value / (self.target * current)
        if abs(1.0 - ratio) > HPA_TOLERANCE:
            rec = math.ceil(value / self.target)
        return self.behavior.normalize(now, current, rec)


class KubeAiPolicy:
    """KubeAI: 10-minute simple moving average of active requests / targetRequests."""

    uses_prometheus = False

    def __init__(self, limits: FleetLimits) -> None:
        self.name = "kubeai"
        self.interval = KUBEAI_INTERVAL_S
        self.target = float(limits.concurrency)
        self.min_replicas, self.max_replicas = limits.min_replicas, limits.max_replicas
        self.window: deque[float] = deque(maxlen=int(KUBEAI_WINDOW_S / KUBEAI_INTERVAL_S))
        self.required_downs = math.ceil(KUBEAI_SCALE_DOWN_DELAY_S / KUBEAI_INTERVAL_S)
        self.consecutive_downs = 0

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        if obs.waiting is None or obs.running is None or ready == 0:
            return current  # "no ready endpoints found", skipped
        value = obs.waiting + obs.running
        if not self.window:  # as if the load had been steady before the trace started
            self.window.extend([value] * (self.window.maxlen or 1))
        self.window.append(value)
        avg = sum(self.window) / len(self.window)
        want = min(max(math.ceil(avg / self.target), self.min_replicas), self.max_replicas)
        if current > want:
            if self.consecutive_downs < self.required_downs:
                self.consecutive_downs += 1
                return current
            return want
        self.consecutive_downs = 0
        return want


# ------------------------------------------------------------------------------ plans: static, oracle


ORACLE_WINDOW_S = 10.0
SLO_TARGET = 0.99
"""The SLO attainment the targets ask for: where a fixed fleet reaches it cheaply, inferfleet must."""


def oracle_needs(
    workload: Workload, params: SimParams, slo_s: float, min_replicas: int, cap: int
) -> list[tuple[float, int]]:
    """(window start, replicas) per ORACLE_WINDOW_S window: the fewest that keep waits within the SLO.

    Window by window, with the fleet's state carried over, it searches (bisection) the smallest
    replica count, ready from the window's start, under which every request that arrived before
    the window's end and had not started at its start begins within `slo_s`, simulating up to
    the window's end plus the SLO on a copy of the fleet. Perfect foresight, no cold start (the
    plan requests each replica one cold start earlier), the same engine model and routing.
    """
    fleet = Fleet(workload, replace(params, queue_timeout_s=None, max_queued=None), None)  # refuses none
    lo_bound = max(min_replicas, 1)
    fleet.setup(lo_bound)
    arrivals = workload.arrivals
    out: list[tuple[float, int]] = []
    t0 = 0.0
    first_pending = 0  # requests before this index have all started
    while t0 < workload.horizon:
        t1 = min(t0 + ORACLE_WINDOW_S, workload.horizon)
        while first_pending < len(arrivals) and not math.isnan(fleet.waits[first_pending]):
            first_pending += 1
        last = bisect.bisect_left(arrivals, t1)

        def meets_slo(
            r: int, start: float = t0, end: float = t1, first: int = first_pending, upto: int = last
        ) -> bool:
            trial = fleet.clone()
            trial.scale_to(r, start, ready_now=True)
            trial.run(until=end + slo_s)
            waits = trial.waits
            return all(waits[k] <= slo_s for k in range(first, upto))  # NaN (not started) fails too

        # Start from the current size: grow it exponentially until the SLO holds, then bisect.
        prev = max(fleet.active(), lo_bound)
        if meets_slo(prev):
            lo, hi = lo_bound, prev
        else:
            lo, step = prev + 1, 1
            while prev + step < cap and not meets_slo(prev + step):
                lo = prev + step + 1
                step *= 2
            hi = min(prev + step, cap)
            lo = min(lo, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            if meets_slo(mid):
                hi = mid
            else:
                lo = mid + 1
        best = lo
        fleet.scale_to(best, t0, ready_now=True)
        fleet.run(until=t1)
        if not out or out[-1][1] != best:
            out.append((t0, best))
        t0 = t1
    return out


def peak_replicas(need: list[tuple[float, int]]) -> int:
    return max(r for _, r in need)


def default_max_replicas(peak: int) -> int:
    """Room for an autoscaler to overshoot the oracle's peak need: max(peak + 2, 1.5 x peak)."""
    return max(peak + 2, math.ceil(1.5 * peak))


def initial_replicas(need: list[tuple[float, int]], min_replicas: int, first_seconds: float = 60.0) -> int:
    return max([min_replicas, 1] + [r for t, r in need if t <= first_seconds])


def static_plan(need: list[tuple[float, int]]) -> Plan:
    return Plan("static-peak", initial_ready=peak_replicas(need))


ORACLE_BRIDGES_S = (0.0, 120.0, 300.0)
"""Gaps the oracle's candidate plans keep a replica through even when a start would be shorter:
a replica given back keeps its GPUs while its long requests end, so a short warm restart does
not make giving it back pay (ServeGen R1's decodes run for minutes)."""


def oracle_plan(
    need: list[tuple[float, int]],
    params: SimParams,
    horizon: float,
    bridge_s: float = 0.0,
    take_back_draining: bool = True,
) -> Plan:
    rng = random.Random(f"oracle-cold-start:{params.seed}")
    slots: dict[int, list[list[float]]] = {}
    level = 0
    for t, r in need:
        for k in range(level + 1, r + 1):
            slots.setdefault(k, []).append([t, horizon])
        for k in range(r + 1, level + 1):
            slots[k][-1][1] = t
        level = r
    initial = 0
    adds: list[tuple[float, float]] = []
    removals: list[float] = []
    for intervals in slots.values():
        merged: list[tuple[float, float, float]] = []  # (start, end, cold start)
        for s, e in intervals:
            if params.starts is not None:  # each slot its own node: cold the first time only
                cold = slot_start(params.starts, rng, used=bool(merged))
            else:
                cold = rng.uniform(params.cold_start_min, params.cold_start_max)
            if merged and s - max(cold, bridge_s) <= merged[-1][1]:
                merged[-1] = (merged[-1][0], e, merged[-1][2])
            else:
                merged.append((s, e, cold))
        for s, e, cold in merged:
            if s - cold <= 0:
                initial += 1
            else:
                adds.append((s - cold, cold))
            if e < horizon:
                removals.append(e)
    return Plan(
        "oracle",
        initial_ready=initial,
        adds=tuple(sorted(adds)),
        removals=tuple(sorted(removals)),
        take_back_draining=take_back_draining,
    )
