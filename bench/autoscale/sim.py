"""A discrete-event simulated fleet of LLM inference replicas.

The engine model (constants in `SimParams`, defaults documented there)
----------------------------------------------------------------------
* A replica runs up to `concurrency` (C) requests at once: the engine's running batch.
* Requests that find no free slot wait in ONE first-come-first-served queue in front of the
  fleet, and a request is sent to the ready replica with the most free slots. This is idealised
  routing (a gateway with least-load balancing and no head-of-line blocking behind a busy pod);
  every policy gets the same, so it shifts absolute numbers, not the comparison. The queue is
  what the engines' `num_requests_waiting` gauges add up to.
* A request's service time is fixed when it starts:
      prefill_s_per_token * ContextTokens
    + decode_s_per_token * (1 + decode_slowdown_at_full_batch * occupancy) * GeneratedTokens
  with occupancy = the replica's running requests (including this one) / C: decoding is
  memory-bandwidth bound, so a fuller batch slows every sequence down a little.
* A replica requested at t is ready at t + cold start, drawn uniformly from
  [cold_start_min, cold_start_max] (image pull + weights load) from a generator seeded with
  `seed`: every policy draws the same sequence, so its k-th new replica starts as slowly as
  anyone's k-th.
* Scaling down removes replicas that are still starting first (newest first, as a ReplicaSet
  does), then the ready replicas with the fewest running requests. A removed ready replica
  drains: it takes no new requests, finishes the running ones, then releases its GPUs.
* GPU time of a replica runs from the moment it is requested until it is released (cancelled,
  or drained), counted inside [0, horizon], times `gpus_per_replica`.
* What an autoscaler sees: Prometheus scrapes each ready, serving replica every
  `scrape_interval` seconds; a Prometheus-based autoscaler reads, at its tick t, the latest
  scrape at or before t - `scrape_lag`: the waiting requests and the running ones summed over
  the replicas that were ready at that scrape (None when no replica was ready: no pod, no
  series). Autoscalers that scrape the pods themselves (KubeAI) read the values at the tick.
* The fleet has inferfleet's gateway at its door: the one queue is the gateway's, and it counts
  every arrival (`inferfleet_gateway_arrivals_total`). Prometheus scrapes the counter at the
  same scrapes as the engines, ready replicas or not (the gateway is its own pod), and an
  autoscaler that reads it sees `rate(...[1m])` evaluated at that scrape (`prometheus_rate`):
  the same interval and lag as the engines' counters.
* The gateway's queue as configured, when asked (`queue_timeout_s`, `max_queued`; default:
  patient clients and no bound): a request still waiting `queue_timeout_s` after it arrived
  leaves the queue with a 503, and one that finds `max_queued` waiting gets a 429 at once.
  Either is refused: counted at the door, never served, an SLO miss, and invisible to the
  engines' counters (so the flow balance, completions + growth, misses it; the door does not).

After the last arrival the simulation continues (autoscalers keep ticking) until every
request has finished, or `drain_limit_s` after the horizon, when unfinished requests are
counted as unserved (their wait runs to the end of the simulation).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.autoscale.workload import Workload

# Event kinds, in the order they are handled at equal times.
_COMPLETE, _READY, _ARRIVAL, _PLAN, _SCRAPE, _TICK = range(6)


@dataclass(frozen=True)
class SimParams:
    concurrency: int = 32
    """Per replica: running-batch limit (the engine's max concurrent requests)."""
    prefill_s_per_token: float = 0.00015
    """Prefill cost per prompt token (about 6.7k tokens/s per sequence)."""
    decode_s_per_token: float = 0.020
    """Time per output token of a sequence in a nearly empty batch (50 tokens/s)."""
    decode_slowdown_at_full_batch: float = 0.5
    """Per-token decode time grows linearly with occupancy, by this fraction at a full batch."""
    cold_start_min: float = 60.0
    cold_start_max: float = 300.0
    scrape_interval: float = 15.0
    scrape_lag: float = 0.0
    gpus_per_replica: int = 1
    rate_window: float = 60.0
    """Window of the completion-rate series (PromQL `rate(...[1m])`)."""
    seed: int = 0
    drain_limit_s: float = 3600.0
    queue_timeout_s: float | None = None
    """The gateway's `queueTimeoutSeconds`: a request waiting longer gets 503 (None: waits on)."""
    max_queued: int | None = None
    """The gateway's `maxQueuedRequests`: an arrival finding this many waiting gets 429."""

    def service_time(self, context: int, generated: int, occupancy: float) -> float:
        decode = self.decode_s_per_token * (1.0 + self.decode_slowdown_at_full_batch * occupancy)
        return self.prefill_s_per_token * context + decode * generated


@dataclass(frozen=True)
class Observation:
    waiting: float | None
    running: float | None
    ready: int
    """Replicas that reported (were ready and serving at the scrape)."""
    completion_rate: float | None = None
    """Requests finished per second by the reporting replicas over the last `rate_window`
    seconds: PromQL `sum(rate(vllm:request_success_total[1m]))` (None: no replica reported)."""
    arrival_rate: float | None = None
    """Requests per second counted at the gateway's door over the last `rate_window` seconds:
    PromQL `rate(inferfleet_gateway_arrivals_total[1m])` (None: fewer than two scrapes in it)."""
    gateway_queued: float | None = None
    """The gateway's queue (`inferfleet_gateway_queued_requests`): the one queue of the fleet."""
    gateway_in_flight: float | None = None
    """Requests the gateway has on engines, draining ones included
    (`inferfleet_gateway_in_flight_requests`)."""


def prometheus_rate(samples: Sequence[tuple[float, float]], now: float, window: float) -> float | None:
    """PromQL `rate(counter[window])` evaluated at `now` over scraped (time, value) samples.

    As Prometheus 3 computes it (promql/functions.go, extrapolatedRate): the samples in
    (now - window, now], at least two of them, or None; the increase from the first to the
    last, extrapolated to the window's edges when the first or last sample lies within 1.1
    average scrape intervals of them (else by half an interval), and not back past the
    counter's zero; divided by the window. The counter never resets here.
    """
    inside = [(t, v) for t, v in samples if now - window < t <= now]
    if len(inside) < 2:
        return None
    (t0, v0), (t1, v1) = inside[0], inside[-1]
    sampled = t1 - t0
    increase = v1 - v0
    if sampled <= 0:
        return None
    threshold = 1.1 * sampled / (len(inside) - 1)
    to_start = t0 - (now - window)
    to_end = now - t1
    if to_start >= threshold:
        to_start = sampled / (len(inside) - 1) / 2
    if increase > 0 and v0 >= 0:
        to_start = min(to_start, sampled * v0 / increase)
    if to_end >= threshold:
        to_end = sampled / (len(inside) - 1) / 2
    return increase * (sampled + to_start + to_end) / sampled / window


class Autoscaler(Protocol):
    """A policy that ticks: it reads an observation and returns the replicas it wants."""

    name: str
    interval: float
    uses_prometheus: bool

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int: ...


@dataclass(frozen=True)
class Plan:
    """A precomputed schedule (static provisioning, the oracle)."""

    name: str
    initial_ready: int
    adds: tuple[tuple[float, float], ...] = ()
    """(time requested, cold start) of each replica added later."""
    removals: tuple[float, ...] = ()
    """Times at which one ready replica (the least loaded) is removed."""


class _Replica:
    __slots__ = ("draining", "end", "gone", "ready", "requested", "running")

    def __init__(self, requested: float) -> None:
        self.requested = requested
        self.ready = False
        self.draining = False
        self.gone = False
        self.running = 0
        self.end: float | None = None

    def copy(self) -> _Replica:
        r = _Replica(self.requested)
        r.ready, r.draining, r.gone, r.running, r.end = (
            self.ready,
            self.draining,
            self.gone,
            self.running,
            self.end,
        )
        return r


@dataclass
class RunResult:
    name: str
    waits: list[float]
    """Queue wait of every request (unserved ones: until the end of the simulation)."""
    completed: int
    unserved: int
    """Requests that never started (still queued when the simulation ended)."""
    in_flight: int
    """Requests started but not finished when the simulation ended."""
    gpu_seconds: float
    replica_changes: list[tuple[float, int, int]]
    """(time, replicas before, replicas after) of every scale event."""
    timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    """(time, replicas, ready, waiting, running) at every scrape."""
    end_time: float = 0.0
    refused: tuple[int, ...] = ()
    """Requests the gateway's queue refused (429 when full, 503 after its timeout); their wait
    is the time until the refusal."""


class Fleet:
    """The simulated fleet and its event queue; `simulate` drives it, the oracle steps it."""

    def __init__(
        self, workload: Workload, params: SimParams, policy: Autoscaler | Plan | None = None
    ) -> None:
        self.w = workload
        self.p = params
        self.policy = policy
        self.n = len(workload.arrivals)
        self.cold_rng = random.Random(f"cold-start:{params.seed}")
        self.seq = itertools.count()
        self.heap: list[tuple[float, int, int, object]] = []
        self.waits = [math.nan] * self.n
        self.refused: list[int] = []
        self.queue: deque[int] = deque()
        self.replicas: list[_Replica] = []
        self.serving: list[_Replica] = []  # ready and not draining
        self.starting: list[_Replica] = []
        self.running_serving = 0
        self.completed = 0
        self.completed_serving = 0  # finished on serving replicas: the engines' success counters
        self.counter_history: deque[tuple[float, int]] = deque()
        self.door_arrivals = 0  # the gateway's arrivals counter
        self.door_history: deque[tuple[float, float]] = deque()  # its scrapes within the rate window
        self.next_arrival = 0
        self.now = 0.0
        self.changes: list[tuple[float, int, int]] = []
        self.timeline: list[tuple[float, int, int, int, int]] = []
        self.scrapes: list[tuple[float, Observation]] = []
        self.scrape_ptr = 0
        self._plan_batch = (-1.0, 0)

    # ---------------------------------------------------------------- copying (for the oracle)
    def clone(self) -> Fleet:
        """An independent copy of the mutable state (the workload is shared, read-only)."""
        f = Fleet.__new__(Fleet)
        f.__dict__.update(self.__dict__)
        mapping = {id(r): r.copy() for r in self.replicas}
        f.replicas = [mapping[id(r)] for r in self.replicas]
        f.serving = [mapping[id(r)] for r in self.serving]
        f.starting = [mapping[id(r)] for r in self.starting]
        f.heap = [
            (t, k, q, mapping.get(id(o), o) if isinstance(o, _Replica) else o) for t, k, q, o in self.heap
        ]
        f.waits = list(self.waits)
        f.refused = list(self.refused)
        f.counter_history = deque(self.counter_history)
        f.door_history = deque(self.door_history)
        f.queue = deque(self.queue)
        f.changes = list(self.changes)
        f.timeline, f.scrapes = [], []
        f.cold_rng = random.Random()
        f.cold_rng.setstate(self.cold_rng.getstate())
        f.seq = itertools.count(next(self.seq) + 1_000_000_000)  # fresh ids; order among equal times kept
        return f

    # ---------------------------------------------------------------- replicas
    def active(self) -> int:
        return len(self.serving) + len(self.starting)

    def _start(self, i: int, r: _Replica, now: float) -> None:
        self.waits[i] = now - self.w.arrivals[i]
        r.running += 1
        self.running_serving += 1
        s = self.p.service_time(
            self.w.context_tokens[i], self.w.generated_tokens[i], r.running / self.p.concurrency
        )
        heapq.heappush(self.heap, (now + s, _COMPLETE, next(self.seq), r))

    def _dispatch_queue(self, r: _Replica, now: float) -> None:
        c = self.p.concurrency
        while self.queue and r.running < c:
            self._start(self.queue.popleft(), r, now)

    def add_replica(self, now: float, cold: float | None = None, ready_now: bool = False) -> None:
        r = _Replica(now)
        self.replicas.append(r)
        if ready_now:
            r.ready = True
            self.serving.append(r)
            self._dispatch_queue(r, now)
            return
        self.starting.append(r)
        delay = (
            cold if cold is not None else self.cold_rng.uniform(self.p.cold_start_min, self.p.cold_start_max)
        )
        heapq.heappush(self.heap, (now + delay, _READY, next(self.seq), r))

    def _release(self, r: _Replica, now: float) -> None:
        r.gone = True
        r.end = now

    def remove_ready(self, now: float) -> bool:
        """Drain the ready replica with the fewest running requests."""
        if not self.serving:
            return False
        r = min(self.serving, key=lambda x: x.running)
        self.serving.remove(r)
        r.draining = True
        self.running_serving -= r.running
        if r.running == 0:
            self._release(r, now)
        return True

    def remove_one(self, now: float) -> bool:
        if self.starting:
            self._release(self.starting.pop(), now)  # newest first
            return True
        return self.remove_ready(now)

    def scale_to(self, target: int, now: float, ready_now: bool = False) -> None:
        before = self.active()
        target = max(0, target)
        if target == before:
            return
        while self.active() < target:
            self.add_replica(now, ready_now=ready_now)
        while self.active() > target and self.remove_one(now):
            pass
        self.changes.append((now, before, self.active()))

    def observe(self) -> Observation:
        door = prometheus_rate(self.door_history, self.now, self.p.rate_window)
        queued = float(len(self.queue))
        in_flight = float(sum(r.running for r in self.replicas if not r.gone))
        if not self.serving:
            return Observation(None, None, 0, None, door, queued, in_flight)
        rate: float | None = None
        hist = self.counter_history
        if hist:
            t0, c0 = hist[0]
            if self.now > t0:
                rate = (self.completed_serving - c0) / (self.now - t0)
        running = float(self.running_serving)
        return Observation(queued, running, len(self.serving), rate, door, queued, in_flight)

    def _record_counter(self, now: float) -> None:
        hist = self.counter_history
        hist.append((now, self.completed_serving))
        while len(hist) > 1 and now - hist[1][0] >= self.p.rate_window:
            hist.popleft()
        door = self.door_history
        door.append((now, float(self.door_arrivals)))
        while door and door[0][0] <= now - self.p.rate_window:
            door.popleft()

    # ---------------------------------------------------------------- the event loop
    def setup(self, initial_ready: int) -> None:
        policy = self.policy
        if isinstance(policy, Plan):
            initial_ready = policy.initial_ready
            for t, cold in policy.adds:
                heapq.heappush(self.heap, (t, _PLAN, next(self.seq), (1, cold)))
            for t in policy.removals:
                heapq.heappush(self.heap, (t, _PLAN, next(self.seq), (-1, 0.0)))
        elif policy is not None:
            heapq.heappush(self.heap, (policy.interval, _TICK, next(self.seq), None))
        for _ in range(initial_ready):
            self.add_replica(0.0, ready_now=True)
        if self.p.scrape_interval > 0 and policy is not None:
            heapq.heappush(self.heap, (0.0, _SCRAPE, next(self.seq), None))

    def _refuse(self, i: int, now: float) -> None:
        self.waits[i] = now - self.w.arrivals[i]
        self.refused.append(i)

    def _time_out(self, now: float) -> None:
        """Requests that waited past the gateway's queue timeout before `now` have left (503)."""
        timeout = self.p.queue_timeout_s
        queue, arrivals = self.queue, self.w.arrivals
        while timeout is not None and queue and arrivals[queue[0]] + timeout < now:
            i = queue.popleft()
            self.waits[i] = timeout
            self.refused.append(i)

    def done(self) -> bool:
        finished = self.completed + len(self.refused)
        return finished == self.n and self.next_arrival == self.n and self.now >= self.w.horizon

    def run(self, until: float = math.inf) -> None:
        """Handle events up to time `until` (inclusive), or until every request has finished."""
        arrivals = self.w.arrivals
        n = self.n
        c = self.p.concurrency
        heap = self.heap
        hard_end = min(until, self.w.horizon + self.p.drain_limit_s)
        while not self.done():
            i = self.next_arrival
            ta = arrivals[i] if i < n else math.inf
            if heap and (heap[0][0], heap[0][1]) < (ta, _ARRIVAL):
                if heap[0][0] > hard_end:
                    break
                now, kind, _, obj = heapq.heappop(heap)
            elif i < n:
                if ta > hard_end:
                    break
                now, kind, obj = ta, _ARRIVAL, i
                self.next_arrival = i + 1
            else:
                break
            self.now = now
            if self.queue:
                self._time_out(now)
            if kind == _COMPLETE:
                r = obj
                assert isinstance(r, _Replica)
                r.running -= 1
                self.completed += 1
                if r.draining:
                    if r.running == 0:
                        self._release(r, now)
                else:
                    self.running_serving -= 1
                    self.completed_serving += 1
                    if self.queue:
                        self._start(self.queue.popleft(), r, now)
            elif kind == _ARRIVAL:
                assert isinstance(obj, int)
                self.door_arrivals += 1
                best: _Replica | None = None
                best_free = 0
                for r in self.serving:
                    free = c - r.running
                    if free > best_free:
                        best, best_free = r, free
                if best is None and self.p.max_queued is not None and len(self.queue) >= self.p.max_queued:
                    self._refuse(obj, now)
                elif best is None:
                    self.queue.append(obj)
                else:
                    self._start(obj, best, now)
            elif kind == _READY:
                r = obj
                assert isinstance(r, _Replica)
                if r.gone:
                    continue
                self.starting.remove(r)
                r.ready = True
                self.serving.append(r)
                self._dispatch_queue(r, now)
            elif kind == _SCRAPE:
                self._record_counter(now)
                self.scrapes.append((now, self.observe()))
                self.timeline.append(
                    (now, self.active(), len(self.serving), len(self.queue), self.running_serving)
                )
                heapq.heappush(heap, (now + self.p.scrape_interval, _SCRAPE, next(self.seq), None))
            elif kind == _TICK:
                self._tick(now)
            elif kind == _PLAN:
                assert isinstance(obj, tuple)
                self._plan_step(now, obj[0], obj[1])
        if not self.done():
            self.now = max(self.now, hard_end)

    def _tick(self, now: float) -> None:
        policy = self.policy
        assert policy is not None
        assert not isinstance(policy, Plan)
        if policy.uses_prometheus and self.p.scrape_interval > 0:
            cutoff = now - self.p.scrape_lag
            scrapes = self.scrapes
            while self.scrape_ptr + 1 < len(scrapes) and scrapes[self.scrape_ptr + 1][0] <= cutoff:
                self.scrape_ptr += 1
            seen = scrapes[self.scrape_ptr] if scrapes and scrapes[self.scrape_ptr][0] <= cutoff else None
            obs = seen[1] if seen is not None else Observation(None, None, 0)
        else:
            obs = self.observe()
        self.scale_to(policy.decide(now, obs, self.active(), len(self.serving)), now)
        heapq.heappush(self.heap, (now + policy.interval, _TICK, next(self.seq), None))

    def _plan_step(self, now: float, sign: int, cold: float) -> None:
        # Plan actions at the same instant make one scale event.
        batch_time, before = self._plan_batch
        if now != batch_time:
            before = self.active()
            self._plan_batch = (now, before)
        elif self.changes and self.changes[-1][0] == now:
            self.changes.pop()
        if sign > 0:
            self.add_replica(now, cold=cold)
        else:
            self.remove_ready(now)
        if self.active() != before:
            self.changes.append((now, before, self.active()))

    def result(self, name: str) -> RunResult:
        waits = list(self.waits)
        end = self.now
        unserved = 0
        for k in range(self.n):
            if math.isnan(waits[k]):
                waits[k] = max(0.0, end - self.w.arrivals[k])
                unserved += 1
        horizon = self.w.horizon
        gpu = 0.0
        for r in self.replicas:
            stop = r.end if r.end is not None else horizon
            gpu += max(0.0, min(stop, horizon) - min(r.requested, horizon))
        return RunResult(
            name=name,
            waits=waits,
            completed=self.completed,
            unserved=unserved,
            in_flight=self.n - self.completed - unserved - len(self.refused),
            gpu_seconds=gpu * self.p.gpus_per_replica,
            replica_changes=list(self.changes),
            timeline=list(self.timeline),
            end_time=end,
            refused=tuple(self.refused),
        )


def simulate(
    workload: Workload,
    params: SimParams,
    policy: Autoscaler | Plan,
    initial_replicas: int = 1,
) -> RunResult:
    """Replay `workload` through a fleet driven by `policy`; see the module docstring."""
    fleet = Fleet(workload, params, policy)
    fleet.setup(initial_replicas)
    fleet.run()
    return fleet.result(policy.name)
