"""The autoscaling loop: every tick one Prometheus query for the whole fleet, one decision per service.

It runs as a task of the operator (started and stopped with it), not as a per-object kopf
timer, so autoscaled InferenceServices carry no finalizer and an idle fleet costs one query
per tick. Decisions come from planning.scaling, the same function the benchmark measures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from inferfleet.api import InferenceServiceSpec
from inferfleet.handlers.logs import service_logger
from inferfleet.handlers.state import service_state
from inferfleet.kube.apply import patch_inference_service_status, scale_inference_service
from inferfleet.kube.events import post_event
from inferfleet.kube.peering import Peering, read_peers
from inferfleet.metrics.operator import AUTOSCALER_TICKS, SCALING_DECISIONS
from inferfleet.metrics.prometheus import MetricsUnavailableError, QueueReader
from inferfleet.planning.autoscale import (
    METRICS_AVAILABLE,
    build_scaling_policy,
    compute_autoscaler_status,
    scaler_state_of,
    with_scaler_state,
)
from inferfleet.planning.conditions import find_condition
from inferfleet.planning.peering import compute_peering_active
from inferfleet.planning.queue_queries import QueueSample
from inferfleet.planning.scaling import ScalingSample, compute_scaling_decision

DEFAULT_INTERVAL_SECONDS = 15.0
# kopf's per-handler loggers need kopf's context; the ticks run in a worker thread without it.
log = logging.getLogger("inferfleet.autoscaler")


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


def autoscale_tick(
    api: Any, reader: QueueReader, index: kopf.Index[Any, Any], logger: Any, now: float
) -> None:
    services = _autoscaled(index)
    if not services:
        return
    problem: str | None = None
    try:
        fleet = reader.read_fleet()
    except MetricsUnavailableError as e:
        fleet, problem = {}, str(e)
    for snapshot, spec in services:
        service_log = service_logger(snapshot)  # JSON logs carry the service's namespace and name
        try:
            _decide(api, reader, snapshot, spec, fleet, problem, service_log, now)
        except ApiException as e:
            service_log.warning(f"autoscaling failed: {e.status} {e.reason}")


def _sample(
    reader: QueueReader, key: tuple[str, str], spec: InferenceServiceSpec, fleet: dict[Any, QueueSample],
    problem: str | None,
) -> tuple[QueueSample, str | None]:  # fmt: skip
    if problem is not None:
        return QueueSample(None, None), problem
    if spec.scaling is not None and spec.scaling.query:
        try:
            sample = reader.read_override(spec.scaling.query)
        except MetricsUnavailableError as e:
            return QueueSample(None, None), str(e)
    else:
        sample = fleet.get(key, QueueSample(None, None))
    if sample.waiting is None:
        return sample, "no fresh queue samples for this service's pods"
    return sample, None


def _scaling_sample(sample: QueueSample) -> ScalingSample:
    """The policy's input; the completion rate only rides along with fresh queue samples."""
    rate = sample.completion_rate if sample.waiting is not None else None
    return ScalingSample(sample.waiting, sample.running, rate)


def _decide(
    api: Any, reader: QueueReader, snapshot: Any, spec: InferenceServiceSpec, fleet: dict[Any, QueueSample],
    problem: str | None, logger: Any, now: float,
) -> None:  # fmt: skip
    meta = snapshot["metadata"]
    key = (meta["namespace"], meta["name"])
    policy = build_scaling_policy(spec)
    assert policy is not None
    sample, missing = _sample(reader, key, spec, fleet, problem)
    state = service_state(key, meta["uid"])
    with state.lock:
        previous = state.written_status or dict(snapshot.get("status") or {})
        scaler = state.scaler if state.scaler is not None else scaler_state_of(previous)
        ready = int(previous.get("readyReplicas") or 0)
        decision, scaler = compute_scaling_decision(
            _scaling_sample(sample), policy, spec.replicas, ready, scaler, now
        )
        state.scaler = scaler
        status = compute_autoscaler_status(
            previous,
            current_replicas=spec.replicas,
            decision=decision,
            queue_depth=sample.waiting,
            metrics_problem=missing,
            generation=int(meta.get("generation") or 0),
            now=now,
        )
        if decision.replicas != spec.replicas:
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
    api: Any, snapshot: Any, previous: dict[str, Any], status: dict[str, Any]
) -> None:
    before = find_condition(list(previous.get("conditions") or []), METRICS_AVAILABLE) or {}
    after = find_condition(list(status.get("conditions") or []), METRICS_AVAILABLE) or {}
    if after.get("status") == "False" and before.get("status") != "False":
        post_event(
            api, snapshot, "Warning", "MetricsUnavailable", f"holding replicas: {after.get('message')}"
        )
    elif after.get("status") == "True" and before.get("status") == "False":
        post_event(api, snapshot, "Normal", "MetricsAvailable", "queue metrics are back")


def _active(api: Any, peering: Peering | None) -> bool:
    """A standby never scales: with peering on, only the instance kopf lets work does."""
    if peering is None:
        return True
    now = datetime.now(UTC)
    return compute_peering_active(read_peers(api, peering), peering.identity, peering.priority, now)


def _tick(api: Any, reader: QueueReader, index: kopf.Index[Any, Any], peering: Peering | None) -> None:
    if _active(api, peering):
        AUTOSCALER_TICKS.inc()
        autoscale_tick(api, reader, index, log, time.time())


async def _loop(memo: kopf.Memo, reader: QueueReader, index: kopf.Index[Any, Any], interval: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(None, _tick, memo.api, reader, index, memo.get("peering"))
        except Exception as e:  # one bad tick must not stop autoscaling
            log.exception(f"autoscaler tick failed: {e}")


@kopf.on.startup()
async def on_startup_autoscaler(
    memo: kopf.Memo, inference_services: kopf.Index[Any, Any], logger: kopf.Logger, **_: Any
) -> None:
    url = memo.get("prometheus_url")
    if not url:
        logger.info("autoscaling is off: no Prometheus URL (--prometheus-url or INFERFLEET_PROMETHEUS_URL)")
        return
    interval = float(memo.get("autoscale_interval") or DEFAULT_INTERVAL_SECONDS)
    memo["autoscaler_task"] = asyncio.create_task(_loop(memo, QueueReader(url), inference_services, interval))
    logger.info(f"autoscaling from {url} every {interval:g}s")


@kopf.on.cleanup()
async def on_cleanup_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("autoscaler_task")
    if task is not None:
        task.cancel()
