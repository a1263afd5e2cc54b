"""A discrete-event simulated fleet of LLM inference replicas.

The engine model (constants in `SimParams`, defaults documented there)
----------------------------------------------------------------------
* A replica runs up to `concurrency` (C) requests at once: the engine's running batch.
* A replica's KV cache holds `kv_capacity_tokens`. A request starts on a replica with a free
  slot AND room for its prompt in the KV cache beyond what the running requests hold (vLLM's
  admission; alone on an empty replica it always fits), and then holds its prompt plus output
  tokens until it ends (the most it reaches; the growth past the capacity that vLLM would
  resolve by preempting is not modelled). So long-context traffic saturates a replica before
  its slots do.
* Requests that cannot start wait in ONE first-come-first-served queue in front of the fleet.
  A queued request that fits nowhere holds the replica with the most free KV cache: no later
  request starts there until it does (vLLM's first-come-first-served admission on the engine
  the gateway picked), while later requests that fit elsewhere go ahead. A request is sent, among the ready
  replicas where it fits, by `routing`: "least-load" (the most free slots: a gateway with
  least-load balancing and no head-of-line blocking behind a busy pod) or "prefix" (the
  gateway's prefix affinity, `inferfleet.planning.prefix_routing.pick_endpoint_by_match`, with
  each replica's held leading blocks read from its prefix cache: the longest match within the
  gateway's default load bound `prefix_load`, else a consistent hash of the first block beyond what all
  share, else least load). Every policy gets the same routing, so it
  shifts absolute numbers, not the comparison. The queue is what the engines'
  `num_requests_waiting` gauges add up to.
* Each replica has a prefix cache (`inferfleet.sim.engine.PrefixCache`, the sim engine's: an
  LRU of prompt blocks, `kv_capacity_tokens / block_tokens` of them): at a request's start its
  leading blocks found in the replica's cache are hits, then all its blocks are cached. A
  workload without block ids (Azure, ServeGen, synthetic) has every block unique: no hits.
* A request's service time is fixed when it starts:
      prefill_s_per_token * (ContextTokens - cached tokens)
    + decode_s_per_token * (1 + decode_slowdown_at_full_batch * occupancy) * GeneratedTokens
  with occupancy = the replica's running requests (including this one) / C: decoding is
  memory-bandwidth bound, so a fuller batch slows every sequence down a little.
* A replica requested at t is ready at t + cold start, drawn uniformly from
  [cold_start_min, cold_start_max] (image pull + weights load) from a generator seeded with
  `seed`: every policy draws the same sequence, so its k-th new replica starts as slowly as
  anyone's k-th. With `starts` (a `bench.autoscale.nodes.StartModel`) it is drawn per node
  state instead: cold = image pull + download at a stated bandwidth + load, warm (the weights
  cache holds the model on that node) = load; see `bench.autoscale.nodes`.
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
  The scrape also carries `kv_cache_usage`, vLLM's `vllm:kv_cache_usage_perc` averaged over
  those replicas (tokens held / capacity).
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

from bench.autoscale.nodes import NodePool, StartModel
from bench.autoscale.nodes import name as node_name
from bench.autoscale.workload import Workload
from inferfleet.gateway.config import GatewayConfig
from inferfleet.planning.prefix_routing import LoadBound, pick_endpoint_by_match
from inferfleet.planning.startup import PodStart
from inferfleet.sim.engine import PrefixCache, Prompt

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
    kv_capacity_tokens: int = 204_800
    """Per replica: KV-cache tokens, 25 GiB at 128 KiB per token (Llama-3.1-8B in bf16 on a
    40-48 GB GPU at vLLM's gpu_memory_utilization 0.9). Also the prefix cache's size."""
    routing: str = "least-load"
    """"least-load" or "prefix" (the gateway's prefix affinity with bounded loads)."""
    prefix_load: LoadBound = field(default_factory=lambda: GatewayConfig().prefix_load)
    """The gateway's `prefixLoadBound` and `prefixLoadSlack` (its defaults)."""
    starts: StartModel | None = None
    """Starts drawn per node state (`bench.autoscale.nodes`); None: U(cold_start_min, max)."""

    def service_time(self, context: int, generated: int, occupancy: float) -> float:
        decode = self.decode_s_per_token * (1.0 + self.decode_slowdown_at_full_batch * occupancy)
        return self.prefill_s_per_token * context + decode * generated


ROUTINGS = ("least-load", "prefix")


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
    kv_cache_usage: float | None = None
    """Mean KV-cache fraction (0..1) of the reporting replicas (`vllm:kv_cache_usage_perc`)."""


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
    take_back_draining: bool = False
    """An add while a removed replica still finishes its requests serves with that one again
    (weights loaded, no start) instead of starting another: the oracle's foresight. Without it,
    on long decodes (ServeGen R1) a warm re-add next to a replica draining for minutes paid both."""


class _Replica:
    __slots__ = (
        "cache", "drained_at", "draining", "end", "gone", "kv", "name", "node", "ready", "ready_at",
        "requested", "running", "warm",
    )  # fmt: skip

    def __init__(self, requested: float, name: str, cache: PrefixCache | None, node: int = -1) -> None:
        self.requested = requested
        self.name = name
        self.ready = False
        self.draining = False
        self.drained_at: float | None = None
        """When its last drain began (None while it serves)."""
        self.gone = False
        self.running = 0
        self.kv = 0
        """KV-cache tokens held by the running requests."""
        self.end: float | None = None
        self.cache = cache
        self.node = node
        self.ready_at: float | None = None
        self.warm: bool | None = False

    def copy(self) -> _Replica:
        cache = None
        if self.cache is not None and not self.gone:
            cache = PrefixCache(self.cache.capacity, self.cache.block_tokens)
            cache.blocks = self.cache.blocks.copy()
        r = _Replica(self.requested, self.name, cache, self.node)
        r.ready, r.draining, r.gone, r.running, r.kv, r.end = (
            self.ready,
            self.draining,
            self.gone,
            self.running,
            self.kv,
            self.end,
        )
        r.ready_at, r.warm, r.drained_at = self.ready_at, self.warm, self.drained_at
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
    prompt_tokens: int = 0
    """Prompt tokens of every started request (the prefix caches' queries)."""
    prefix_hit_tokens: int = 0
    """Of those, tokens found in the replica's prefix cache (prefill skipped)."""
    kv_limited_s: float = 0.0
    """Time (sampled at every scrape) with requests waiting while a ready replica had a free
    slot: the fleet was out of KV cache, not out of slots."""
    starts: tuple[tuple[float, bool], ...] = ()
    """(seconds from request to Ready, warm) of every replica that started (not the initial ones)."""
    draining_gpu_seconds: float = 0.0
    """Of gpu_seconds, those of replicas draining: given back, finishing their running requests."""


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
        if params.routing not in ROUTINGS:
            raise ValueError(f"unknown routing {params.routing!r} (known: {', '.join(ROUTINGS)})")
        self.cache_blocks = (
            params.kv_capacity_tokens // workload.block_tokens if workload.prefix_blocks else 0
        )
        self.prompt_tokens = 0
        self.hit_tokens = 0
        self.kv_limited_s = 0.0
        self.pool = NodePool(params.starts) if params.starts is not None else None

    # ---------------------------------------------------------------- copying (for the oracle)
    def clone(self) -> Fleet:
        """An independent copy of the mutable state (the workload is shared, read-only)."""
        f = Fleet.__new__(Fleet)
        f.__dict__.update(self.__dict__)
        mapping = {id(r): r.copy() for r in self.replicas}
        f.replicas = [mapping[id(r)] for r in self.replicas]
        f.serving = [mapping[id(r)] for r in self.serving]
        f.starting = [mapping[id(r)] for r in self.starting]
        f.heap = [(t, k, q, _remap(o, mapping)) for t, k, q, o in self.heap]
        f.waits = list(self.waits)
        f.refused = list(self.refused)
        f.counter_history = deque(self.counter_history)
        f.door_history = deque(self.door_history)
        f.queue = deque(self.queue)
        f.changes = list(self.changes)
        f.timeline, f.scrapes = [], []
        f.cold_rng = random.Random()
        f.cold_rng.setstate(self.cold_rng.getstate())
        f.pool = self.pool.copy() if self.pool is not None else None
        f.seq = itertools.count(next(self.seq) + 1_000_000_000)  # fresh ids; order among equal times kept
        return f

    # ---------------------------------------------------------------- replicas
    def active(self) -> int:
        return len(self.serving) + len(self.starting)

    def _kv_need(self, i: int) -> int:
        return self.w.context_tokens[i] + self.w.generated_tokens[i]

    def _fits(self, r: _Replica, prompt: int) -> bool:
        return r.running < self.p.concurrency and (
            r.running == 0 or r.kv + prompt <= self.p.kv_capacity_tokens
        )

    def _route(self, i: int, held: set[int] | None = None) -> _Replica | None:
        """The ready replica request `i` starts on now, by the fleet's routing; None: it waits."""
        prompt = self.w.context_tokens[i]
        fits = [r for r in self.serving if self._fits(r, prompt) and not (held and id(r) in held)]
        if not fits:
            return None
        blocks = self.w.blocks(i)
        if self.p.routing == "prefix" and blocks:
            in_flight = {r.name: r.running for r in self.serving}
            exclude = {r.name for r in self.serving} - {r.name for r in fits}
            leading = {r.name: _leading_cached(r, blocks) for r in fits}
            # shared=0: the fleet keeps no index of where prompts part, only the caches' contents
            name = pick_endpoint_by_match(
                in_flight, self.p.concurrency, exclude, blocks, leading, 0, self.p.prefix_load
            )
            if name is not None:
                return next(r for r in fits if r.name == name)
        best = fits[0]
        for r in fits:
            if r.running < best.running:
                best = r
        return best

    def _start(self, i: int, r: _Replica, now: float) -> None:
        self.waits[i] = now - self.w.arrivals[i]
        r.running += 1
        self.running_serving += 1
        context = self.w.context_tokens[i]
        cached = 0
        if r.cache is not None:
            cached = min(context, r.cache.admit(Prompt(context, self.w.blocks(i))))
        self.prompt_tokens += context
        self.hit_tokens += cached
        need = self._kv_need(i)
        r.kv += need
        s = self.p.service_time(context - cached, self.w.generated_tokens[i], r.running / self.p.concurrency)
        heapq.heappush(self.heap, (now + s, _COMPLETE, next(self.seq), (r, need)))

    def _dispatch(self, now: float) -> None:
        """Start queued requests in arrival order wherever they fit; one that fits nowhere holds
        the replica with the most free KV cache, closed to later requests until it starts."""
        queue, held = self.queue, set[int]()
        open_slots = sum(1 for r in self.serving if r.running < self.p.concurrency)
        kept: list[int] = []
        while queue and open_slots > len(held):
            i = queue.popleft()
            r = self._route(i, held)
            if r is not None:
                self._start(i, r, now)
                open_slots -= r.running >= self.p.concurrency and id(r) not in held
                continue
            kept.append(i)
            free = [x for x in self.serving if x.running < self.p.concurrency and id(x) not in held]
            if free:
                held.add(id(max(free, key=lambda x: -x.kv)))
        queue.extendleft(reversed(kept))

    def add_replica(self, now: float, cold: float | None = None, ready_now: bool = False) -> None:
        cache = PrefixCache(self.cache_blocks, self.w.block_tokens) if self.cache_blocks else None
        node = self.pool.place(warm_now=ready_now) if self.pool is not None else -1
        r = _Replica(now, f"r{len(self.replicas)}", cache, node)
        self.replicas.append(r)
        if ready_now:
            r.ready, r.ready_at = True, now
            self.serving.append(r)
            self._dispatch(now)
            return
        self.starting.append(r)
        if cold is not None:
            delay, r.warm = cold, None  # a plan's own start: warm or not is the plan's business
        elif self.pool is not None:
            delay, r.warm = self.pool.start_seconds(node, self.cold_rng)
        else:
            delay = self.cold_rng.uniform(self.p.cold_start_min, self.p.cold_start_max)
        heapq.heappush(self.heap, (now + delay, _READY, next(self.seq), r))

    def _release(self, r: _Replica, now: float) -> None:
        r.gone = True
        r.end = now
        if self.pool is not None and r.node >= 0:
            self.pool.free(r.node)

    def pod_starts(self) -> list[PodStart]:
        """The replicas' pods as the Kubernetes API shows them (created, Ready) on their nodes.

        The initial replicas (ready at t=0, "as if it had run at that size") are left out: their
        starts happened before the trace and are unknown, and counting them as 0-second starts
        made the learned median (and so the policy's lookahead) 0 until most starts were real."""
        return [
            PodStart(r.name, node_name(r.node), r.requested, r.ready_at)
            for r in self.replicas
            if not r.gone and not (r.ready_at is not None and r.ready_at <= r.requested)
        ]

    def node_view(self) -> tuple[list[str], list[str]]:
        """Nodes whose cache holds the weights, and the nodes running the service's pods."""
        if self.pool is None:
            return [], []
        return self.pool.present(), [node_name(r.node) for r in self.replicas if not r.gone]

    def remove_ready(self, now: float) -> bool:
        """Drain the ready replica with the fewest running requests."""
        if not self.serving:
            return False
        r = min(self.serving, key=lambda x: x.running)
        self.serving.remove(r)
        r.draining, r.drained_at = True, now
        self.running_serving -= r.running
        if r.running == 0:
            self._release(r, now)
        return True

    def _undrain(self, now: float) -> bool:
        """Serve again with a replica still draining (the oracle's search: a replica given back
        and wanted again soon is kept, KV cache and all, rather than replaced by an empty one)."""
        draining = [r for r in self.replicas if r.draining and not r.gone]
        if not draining:
            return False
        r = draining[-1]
        r.draining, r.drained_at = False, None
        self.serving.append(r)
        self.running_serving += r.running
        self._dispatch(now)
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
            if not (ready_now and self._undrain(now)):
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
        kv = sum(r.kv for r in self.serving) / (self.p.kv_capacity_tokens * len(self.serving))
        rate: float | None = None
        hist = self.counter_history
        if hist:
            t0, c0 = hist[0]
            if self.now > t0:
                rate = (self.completed_serving - c0) / (self.now - t0)
        running = float(self.running_serving)
        return Observation(queued, running, len(self.serving), rate, door, queued, in_flight, min(kv, 1.0))

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
        if self.pool is not None:
            self.pool.prefetch()  # beyond the nodes serving
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
                assert isinstance(obj, tuple)
                self._complete(obj[0], obj[1], now)
            elif kind == _ARRIVAL:
                assert isinstance(obj, int)
                self._arrive(obj, now)
            elif kind == _READY:
                r = obj
                assert isinstance(r, _Replica)
                if r.gone:
                    continue
                self.starting.remove(r)
                r.ready, r.ready_at = True, now
                if self.pool is not None:
                    self.pool.ready(r.node)
                self.serving.append(r)
                self._dispatch(now)
            elif kind == _SCRAPE:
                self._record_counter(now)
                if self.queue and any(r.running < self.p.concurrency for r in self.serving):
                    self.kv_limited_s += self.p.scrape_interval
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

    def _complete(self, r: _Replica, kv: int, now: float) -> None:
        r.running -= 1
        r.kv -= kv
        self.completed += 1
        if r.draining:
            if r.running == 0:
                self._release(r, now)
        else:
            self.running_serving -= 1
            self.completed_serving += 1
            if self.queue:
                self._dispatch(now)

    def _arrive(self, i: int, now: float) -> None:
        self.door_arrivals += 1
        full = self.p.max_queued is not None and len(self.queue) >= self.p.max_queued
        self.queue.append(i)
        self._dispatch(now)
        if full and self.queue and self.queue[-1] == i:
            self.queue.pop()
            self._refuse(i, now)

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
        see_pods = getattr(policy, "see_pods", None)
        if see_pods is not None:  # what the operator reads of pods and caches from the API
            present, serving = self.node_view()
            cache = self.pool is not None and self.pool.model.cache
            see_pods(now, self.pod_starts(), present, serving, cache)
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
            plan = self.policy
            if not (isinstance(plan, Plan) and plan.take_back_draining and self._undrain(now)):
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
        gpu = draining = 0.0
        for r in self.replicas:
            stop = min(r.end if r.end is not None else horizon, horizon)
            gpu += max(0.0, stop - min(r.requested, horizon))
            if r.drained_at is not None:
                draining += max(0.0, stop - min(r.drained_at, horizon))
        return RunResult(
            name=name,
            waits=waits,
            completed=self.completed,
            unserved=unserved,
            in_flight=self.n - self.completed - unserved - len(self.refused),
            gpu_seconds=gpu * self.p.gpus_per_replica,
            draining_gpu_seconds=draining * self.p.gpus_per_replica,
            replica_changes=list(self.changes),
            timeline=list(self.timeline),
            end_time=end,
            refused=tuple(self.refused),
            prompt_tokens=self.prompt_tokens,
            prefix_hit_tokens=self.hit_tokens,
            kv_limited_s=self.kv_limited_s,
            starts=tuple(
                (r.ready_at - r.requested, r.warm)
                for r in self.replicas
                if r.ready_at is not None and r.ready_at > r.requested and r.warm is not None
            ),
        )


def _leading_cached(r: _Replica, blocks: tuple[int, ...]) -> int:
    """How many of the prompt's leading blocks the replica's prefix cache holds (what the
    gateway's prefix index stands for: the blocks it recently sent there)."""
    if r.cache is None:
        return 0
    n = 0
    while n < len(blocks) and blocks[n] in r.cache.blocks:
        n += 1
    return n


def _remap(obj: object, mapping: dict[int, _Replica]) -> object:
    """A heap entry's object in a clone: its replica (alone, or with a request's KV) copied."""
    if isinstance(obj, _Replica):
        return mapping.get(id(obj), obj)
    if isinstance(obj, tuple) and obj and isinstance(obj[0], _Replica):
        return (mapping.get(id(obj[0]), obj[0]), *obj[1:])
    return obj


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
