"""Simulated inference engines for the local cluster's KWOK pods.

KWOK pods run nothing, so this stands in for the engines: for every Ready pod of an
InferenceService it serves vLLM's queue metrics and request-success counter on 127.0.0.1 and
registers the endpoint with the local Prometheus. Requests arrive from a load profile (a trace
or a step), wait in one queue in front of the fleet, and run on pods with a free slot (each pod runs at most
`max_concurrent` at once for `service_seconds`). The operator then sees, through real
Prometheus, the queue it must scale for: a closed loop.
"""

from __future__ import annotations

import random
import threading
from contextlib import suppress
from dataclasses import dataclass, field

from kubernetes import client
from prometheus_client import CollectorRegistry, Counter, Gauge

from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.sim.exporter import TextExporter, start_text_exporter
from inferfleet.sim.load import RateFn, poisson

__all__ = ["RateFn", "SimulatedFleet", "step_load"]


def step_load(rate: float, seconds: float) -> RateFn:
    return lambda t: rate if t < seconds else 0.0


@dataclass
class SimulatedPod:
    name: str
    exporter: TextExporter
    waiting: Gauge
    running: Gauge
    success: Counter
    """vllm:request_success_total: requests this pod finished (the autoscaler's completion rate)."""
    busy: list[float] = field(default_factory=list)  # seconds left for each running request


def _ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions if pod.status else None
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in conditions or []
    )


@dataclass
class SimulatedFleet:
    api: client.ApiClient
    prometheus: LocalPrometheus
    namespace: str
    service: str
    model: str
    load: RateFn
    max_concurrent: int
    service_seconds: float
    tick_seconds: float = 0.5
    seed: int = 7
    queue: int = 0
    completed: int = 0
    pods: dict[str, SimulatedPod] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.service}", daemon=True)
        self._core = client.CoreV1Api(self.api)
        self._lock = threading.Lock()

    def start(self) -> SimulatedFleet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for name in list(self.pods):
            self._remove(name)

    def _target(self, pod: str) -> str:
        return f"sim-{self.namespace}-{pod}"

    def _add(self, pod: str) -> None:
        registry = CollectorRegistry()
        labels = ["model_name"]
        waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", labels, registry=registry
        )
        running = Gauge(
            "vllm:num_requests_running", "Requests running on the engine.", labels, registry=registry
        )
        success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", labels, registry=registry
        )
        exporter = start_text_exporter(registry)
        self.pods[pod] = SimulatedPod(
            pod, exporter, waiting.labels(self.model), running.labels(self.model), success.labels(self.model)
        )
        target_labels = {"namespace": self.namespace, "inferfleet_io_service": self.service, "pod": pod}
        self.prometheus.add_target(self._target(pod), exporter.address, target_labels)

    def _remove(self, pod: str) -> None:
        sim = self.pods.pop(pod)
        self.queue += len(sim.busy)  # a pod that went away takes its requests' progress with it
        self.prometheus.remove_target(self._target(pod))
        sim.exporter.stop()

    def _sync_pods(self) -> None:
        pods = self._core.list_namespaced_pod(
            self.namespace, label_selector=f"{SERVICE_LABEL}={self.service}"
        ).items
        ready = {p.metadata.name for p in pods if _ready(p)}
        for name in ready - set(self.pods):
            self._add(name)
        for name in set(self.pods) - ready:
            self._remove(name)

    def _advance(self, t: float, dt: float) -> None:
        self.queue += poisson(self._rng, self.load(t) * dt)
        for sim in self.pods.values():
            still = [left - dt for left in sim.busy if left - dt > 0]
            done = len(sim.busy) - len(still)
            self.completed += done
            if done:
                sim.success.inc(done)
            sim.busy = still
        for sim in sorted(self.pods.values(), key=lambda s: len(s.busy)):
            take = min(self.queue, self.max_concurrent - len(sim.busy))
            sim.busy += [self.service_seconds] * max(take, 0)
            self.queue -= max(take, 0)
        share, extra = divmod(self.queue, max(len(self.pods), 1))
        for i, sim in enumerate(sorted(self.pods.values(), key=lambda s: s.name)):
            sim.waiting.set(share + (1 if i < extra else 0))
            sim.running.set(len(sim.busy))

    def _run(self) -> None:
        t = 0.0
        while not self._stop.wait(self.tick_seconds):
            with self._lock:
                with suppress(Exception):  # a failed LIST (API server restarting) is retried next tick
                    self._sync_pods()
                self._advance(t, self.tick_seconds)
            t += self.tick_seconds

    def snapshot(self) -> tuple[int, int, int]:
        """(ready pods, waiting, running) right now."""
        with self._lock:
            return len(self.pods), self.queue, sum(len(s.busy) for s in self.pods.values())
