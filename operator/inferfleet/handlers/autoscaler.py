"""The autoscaling loop: every tick one Prometheus query for the whole fleet, one decision per service.

It runs as a task of the operator (started and stopped with it), not as a per-object kopf
timer, so autoscaled InferenceServices carry no finalizer and an idle fleet costs one query
per tick. Decisions come from planning.scaling, the same function the benchmark measures.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.status import EventReason, MetricsReason
from inferfleet.handlers.logs import service_logger
from inferfleet.handlers.memo import runtime_of
from inferfleet.handlers.victims import apply_scale_down_ranking
from inferfleet.kube.apply import patch_inference_service_status, scale_inference_service
from inferfleet.kube.events import post_event
from inferfleet.kube.peering import read_peers
from inferfleet.metrics.operator import AUTOSCALER_TICKS, SCALING_DECISIONS
from inferfleet.metrics.prometheus import MetricsUnavailableError, QueueReader
from inferfleet.planning.autoscale import (
    METRICS_AVAILABLE,
    METRICS_UNAVAILABLE_REASON,
    build_scaling_policy,
    compute_autoscaler_status,
    compute_startup_view,
    scaler_state_of,
    with_scaler_state,
    with_startup,
)
from inferfleet.planning.conditions import find_condition
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.peering import compute_peering_active
from inferfleet.planning.promql import build_confined_query
from inferfleet.planning.queue_queries import QueueSample, compute_override_sample
from inferfleet.planning.scaling import ScalingSample, compute_scaling_decision
from inferfleet.planning.startup import PodStart, build_pod_start
from inferfleet.runtime.config import PeeringConfig
from inferfleet.runtime.operator import OperatorRuntime

# kopf's per-handler loggers need kopf's context; the ticks run in a worker thread without it.
log = logging.getLogger("inferfleet.autoscaler")


@kopf.index("", "v1", "pods", labels={SERVICE_LABEL: kopf.PRESENT, REPLICA_LABEL: kopf.ABSENT})
def engine_pod_starts(
    name: str,
    namespace: str,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    labels: kopf.Labels,
    **_: Any,
) -> Any:
    """Single-pod replicas' creation and Ready times, by service: the starts the autoscaler learns."""
    pod = build_pod_start(name, meta, spec, status)
    return {(namespace, labels[SERVICE_LABEL]): pod} if pod else None


def _autoscaled(index: kopf.Index[Any, Any]) -> list[tuple[Any, InferenceServiceSpec]]:
    services: list[tuple[Any, InferenceServiceSpec]] = []
    for key in list(index):
        snapshot = next(iter(index.get(key, [])), None)
        if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = InferenceServiceSpec.model_validate(dict(snapshot["spec"]))
        except ValueError:
            continue  # the reconciler reports invalid specs
        if spec.scaling is not None:
            services.append((snapshot, spec))
    return services


@dataclass(frozen=True)
class Signal:
    """One service's input this tick: its sample, or why there is none (condition reason, message)."""

    sample: QueueSample
    problem: tuple[str, str] | None = None


NO_SAMPLE = QueueSample(None, None)
DISABLED_MESSAGE = (
    "scaling.query is not used: custom queries are off in this installation (chart value "
    "prometheus.customQueries); holding replicas, remove scaling.query to scale on the engines' queues"
)


Ranker = Callable[[tuple[str, str]], object]
"""Ranks a service's pods for the scale-down about to happen (handlers/victims.py)."""
Starts = Callable[[tuple[str, str]], list[PodStart]]
"""A service's pods with their creation and Ready times (the `engine_pod_starts` index)."""


def _no_starts(key: tuple[str, str]) -> list[PodStart]:
    return []


def autoscale_tick(
    runtime: OperatorRuntime,
    reader: QueueReader,
    index: kopf.Index[Any, Any],
    now: float,
    pods: kopf.Index[Any, Any] | None = None,
    starts: kopf.Index[Any, Any] | None = None,
) -> None:
    """One decision per autoscaled service.

    The fleet's services decide in the tick. A tenant's `scaling.query` runs on the reader's
    pool and its service decides when the answer (or the query timeout) arrives, off the
    tick's path: a slow query holds only its own service, never the tick or other services.
    While a service's query is still running, later ticks leave that service to it."""
    services = _autoscaled(index)
    if not services:
        return
    rank = None if pods is None else functools.partial(apply_scale_down_ranking, runtime.api, reader, pods)
    seen: Starts = _no_starts if starts is None else (lambda key: [p for p in starts.get(key, []) if p])
    try:
        fleet, problem = reader.read_fleet(), None
    except MetricsUnavailableError as e:
        fleet, problem = {}, (METRICS_UNAVAILABLE_REASON, str(e))
    for snapshot, spec in services:
        key, query = _key(snapshot), _query_of(spec)
        if not query:
            _decide_logged(runtime, snapshot, spec, _fleet_signal(fleet.get(key), problem), now, rank, seen)
            continue
        refused = _refused(reader, key, query)
        if refused is not None:
            _decide_logged(runtime, snapshot, spec, refused, now, rank, seen)
            continue

        def decide(
            done: Future[QueueSample], snapshot: Any = snapshot, spec: Any = spec, key: Any = key
        ) -> None:
            signal = _custom_signal(done, fleet.get(key), problem)
            _decide_logged(runtime, snapshot, spec, signal, now, rank, seen)

        if not reader.submit_override(key, build_confined_query(query, key[0]).query or "", decide):
            log.debug(f"{key[0]}/{key[1]}: its previous scaling.query is still running")


def _key(snapshot: Any) -> tuple[str, str]:
    return snapshot["metadata"]["namespace"], snapshot["metadata"]["name"]


def _query_of(spec: InferenceServiceSpec) -> str:
    return (spec.scaling.query if spec.scaling else None) or ""


def _refused(reader: QueueReader, key: tuple[str, str], query: str) -> Signal | None:
    """Why the service's query does not run, or None when it may."""
    if not reader.config.custom_queries:
        return Signal(NO_SAMPLE, (MetricsReason.CUSTOM_QUERY_DISABLED, DISABLED_MESSAGE))
    confined = build_confined_query(query, key[0])
    if confined.query is None:
        return Signal(NO_SAMPLE, (MetricsReason.INVALID_QUERY, f"scaling.query refused: {confined.refusal}"))
    return None


def _fleet_signal(sample: QueueSample | None, problem: tuple[str, str] | None) -> Signal:
    if problem is not None:
        return Signal(NO_SAMPLE, problem)
    if sample is None or sample.waiting is None:
        missing = "no fresh queue samples for this service's pods"
        return Signal(sample or NO_SAMPLE, (METRICS_UNAVAILABLE_REASON, missing))
    return Signal(sample)


def _custom_signal(
    future: Future[QueueSample], engines: QueueSample | None, problem: tuple[str, str] | None
) -> Signal:
    try:
        override = future.result()
    except MetricsUnavailableError as e:
        return Signal(NO_SAMPLE, (METRICS_UNAVAILABLE_REASON, str(e)))
    if problem is not None:  # without the engines' running requests, a queue alone could scale down
        return Signal(NO_SAMPLE, problem)
    if override.waiting is None:
        return Signal(NO_SAMPLE, (METRICS_UNAVAILABLE_REASON, "scaling.query returned no number"))
    return Signal(compute_override_sample(override, engines))


def _decide_logged(
    runtime: OperatorRuntime,
    snapshot: Any,
    spec: InferenceServiceSpec,
    signal: Signal,
    now: float,
    rank: Ranker | None = None,
    starts: Starts = _no_starts,
) -> None:
    service_log = service_logger(snapshot)  # JSON logs carry the service's namespace and name
    try:
        _decide(runtime, snapshot, spec, signal, service_log, now, rank, starts)
    except ApiException as e:
        service_log.warning(f"autoscaling failed: {e.status} {e.reason}")
    except Exception as e:  # on the query pool nobody else would see it
        service_log.exception(f"autoscaling failed: {e}")


def _scaling_sample(sample: QueueSample) -> ScalingSample:
    """The policy's input; the completion rate only rides along with fresh queue samples."""
    fresh = sample.waiting is not None
    rate = sample.completion_rate if fresh else None
    return ScalingSample(
        sample.waiting,
        sample.running,
        rate,
        sample.arrival_rate if fresh else None,
        sample.kv_cache_usage if fresh else None,
    )


def _decide(
    runtime: OperatorRuntime,
    snapshot: Any,
    spec: InferenceServiceSpec,
    signal: Signal,
    logger: logging.LoggerAdapter[Any],
    now: float,
    rank: Ranker | None = None,
    starts: Starts = _no_starts,
) -> None:
    api = runtime.api
    meta = snapshot["metadata"]
    key = (meta["namespace"], meta["name"])
    policy = build_scaling_policy(spec)
    assert policy is not None
    sample = signal.sample if signal.problem is None else NO_SAMPLE
    state = runtime.state(key, meta["uid"])
    with state.lock:
        previous = state.written_status or dict(snapshot.get("status") or {})
        scaler = state.scaler if state.scaler is not None else scaler_state_of(previous)
        scaler, expected_start = compute_startup_view(scaler, previous, starts(key), now)
        ready = int(previous.get("readyReplicas") or 0)
        decision, scaler = compute_scaling_decision(
            _scaling_sample(sample), policy, spec.replicas, ready, scaler, now, expected_start
        )
        state.scaler = scaler
        status = compute_autoscaler_status(
            previous,
            current_replicas=spec.replicas,
            decision=decision,
            queue_depth=sample.waiting,
            metrics_problem=signal.problem[1] if signal.problem else None,
            metrics_reason=signal.problem[0] if signal.problem else METRICS_UNAVAILABLE_REASON,
            generation=int(meta.get("generation") or 0),
            now=now,
        )
        status = with_startup(status, scaler)
        if decision.replicas != spec.replicas:
            if rank is not None and decision.replicas < spec.replicas:
                rank(key)  # the ReplicaSet then removes the pods whose loss costs the least
            scale_inference_service(api, key[0], key[1], decision.replicas)
            direction = "up" if decision.replicas > spec.replicas else "down"
            SCALING_DECISIONS.labels(key[0], key[1], direction, decision.reason).inc()
            change = f"scaled {spec.replicas} -> {decision.replicas}: {decision.message}"
            logger.info(f"{change} ({decision.reason})")
            post_event(api, snapshot, "Normal", decision.reason, change)
        if status != previous:  # the window state alone changes every tick: it rides along, never alone
            status = with_scaler_state(status, scaler)
            patch_inference_service_status(api, key[0], key[1], status)
            state.written_status = status
            _report_metrics_transition(api, snapshot, previous, status)


def _report_metrics_transition(
    api: client.ApiClient, snapshot: Any, previous: dict[str, Any], status: dict[str, Any]
) -> None:
    before = find_condition(list(previous.get("conditions") or []), METRICS_AVAILABLE) or {}
    after = find_condition(list(status.get("conditions") or []), METRICS_AVAILABLE) or {}
    if after.get("status") == "False" and before.get("status") != "False":
        reason = str(after.get("reason") or METRICS_UNAVAILABLE_REASON)
        post_event(api, snapshot, "Warning", reason, f"holding replicas: {after.get('message')}")
    elif after.get("status") == "True" and before.get("status") == "False":
        post_event(api, snapshot, "Normal", EventReason.METRICS_AVAILABLE, "queue metrics are back")


def _active(api: client.ApiClient, peering: PeeringConfig | None) -> bool:
    """A standby never scales: with peering on, only the instance kopf lets work does."""
    if peering is None:
        return True
    now = datetime.now(UTC)
    return compute_peering_active(read_peers(api, peering), peering.identity, peering.priority, now)


def tick(
    runtime: OperatorRuntime,
    reader: QueueReader,
    index: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any] | None = None,
    starts: kopf.Index[Any, Any] | None = None,
) -> None:
    if _active(runtime.api, runtime.config.peering):
        AUTOSCALER_TICKS.inc()
        autoscale_tick(runtime, reader, index, time.time(), pods, starts)


async def _loop(
    runtime: OperatorRuntime,
    reader: QueueReader,
    index: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any],
    interval: float,
    starts: kopf.Index[Any, Any] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(None, tick, runtime, reader, index, pods, starts)
        except Exception as e:  # one bad tick must not stop autoscaling
            log.exception(f"autoscaler tick failed: {e}")


@kopf.on.startup()
async def on_startup_autoscaler(
    memo: kopf.Memo,
    inference_services: kopf.Index[Any, Any],
    engine_pods: kopf.Index[Any, Any],
    engine_pod_starts: kopf.Index[Any, Any],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    runtime = runtime_of(memo)
    prometheus, interval = runtime.config.prometheus, runtime.config.autoscale_interval_seconds
    if not prometheus.url:
        logger.info("autoscaling is off: no Prometheus URL (--prometheus-url or INFERFLEET_PROMETHEUS_URL)")
        return
    reader = QueueReader(prometheus)
    task = asyncio.create_task(
        _loop(runtime, reader, inference_services, engine_pods, interval, engine_pod_starts)
    )
    runtime.on_forget(reader.forget_service)  # a deleted service's query in flight goes with it
    runtime.on_stop(reader.close)
    runtime.on_stop(task.cancel)
    custom = "honoured, confined to each service's namespace" if prometheus.custom_queries else "ignored"
    tls = "not verified" if prometheus.insecure_skip_verify else "verified"
    logger.info(f"autoscaling from {reader.safe_url} every {interval:g}s (TLS {tls}; scaling.query {custom})")
