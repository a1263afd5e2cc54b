"""One arm of the benchmark on a fresh cluster: create the fleet, wait Ready, settle, a quiet window, RSS.

Phases (wall-clock times compared with the audit log's requestReceivedTimestamp, same machine):
  batch 1   t0 = before the first create .. settled = all Ready, every autoscaled service shows
            MetricsAvailable and two more ticks ran (inferfleet), and the operator wrote nothing for
            `settle_seconds`; requests per reconcile are counted over [t0, settled)
  quiet     `quiet_seconds` with nothing changing: the operator's writes, queries per tick; then RSS
  batch 2   as many services again (1000 in total), Ready and settled; then RSS
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client

from bench.reconcile import audit, measure
from bench.reconcile.fleet import ServiceRef, build_fleet_nodes, plan_services, service_manifest
from bench.reconcile.identity import create_operator_identity, operator_user
from bench.reconcile.naive_process import NaiveOperatorProcess
from bench.reconcile.watcher import FleetWatcher
from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.crds import install_crds
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import WaitTimeoutError, wait_for
from inferfleet.planning.names import SERVICE_LABEL

ARMS = ("inferfleet", "naive")
RECONCILE_METRIC = {"inferfleet": measure.RECONCILES, "naive": "naive_reconcile_total"}
METRICS_AVAILABLE = "MetricsAvailable"
SERVICE_RANGE = "service-cluster-ip-range=10.96.0.0/16"


@dataclass(frozen=True)
class Scenario:
    workdir: Path
    services: int = 500
    nodes: int = 200
    quiet_seconds: float = 300.0
    second_batch: bool = True
    namespaces: int = 5
    create_concurrency: int = 8
    autoscale_interval: float = 5.0
    settle_seconds: float = 15.0
    """Settled = the operator sent no write for this long (and, for inferfleet, two ticks ran)."""
    ready_timeout: float | None = None

    @property
    def timeout(self) -> float:
        return self.ready_timeout or max(600.0, 3.0 * self.services)


class Operator(Protocol):
    @property
    def metrics_url(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    def stop(self) -> Any: ...


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Arm:
    name: str
    scenario: Scenario
    admin: client.ApiClient
    operator: Operator
    audit_log: audit.AuditLog
    watcher: FleetWatcher
    prometheus: LocalPrometheus | None
    created: dict[tuple[str, str], float] = field(default_factory=dict)

    def scrape(self) -> measure.Scrape:
        return measure.scrape(self.operator.metrics_url)

    def scrape_prometheus(self) -> measure.Scrape | None:
        return measure.scrape(f"{self.prometheus.url}/metrics") if self.prometheus else None

    def rss_mb(self) -> float:
        assert self.operator.pid is not None
        return round(measure.rss_bytes(self.operator.pid) / 1e6, 1)


def create_services(arm: Arm, refs: Sequence[ServiceRef]) -> None:
    custom = client.CustomObjectsApi(arm.admin)

    def create(ref: ServiceRef) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ref.namespace, PLURAL, service_manifest(ref))
        arm.created[ref.key] = time.time()

    with ThreadPoolExecutor(max_workers=arm.scenario.create_concurrency) as pool:
        list(pool.map(create, refs))


def _progress(what: str, count: Callable[[], int], goal: int, every: float = 30.0) -> Callable[[], bool]:
    last = [time.monotonic()]

    def probe() -> bool:
        done = count()
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            say(f"  {what}: {done}/{goal}")
        return done >= goal

    return probe


def settle(arm: Arm, refs: Sequence[ServiceRef]) -> bool:
    """Wait until the fleet settled (see the module docstring); False if it did not in time."""
    try:
        if arm.prometheus is not None:
            autoscaled = [r.key for r in refs if r.autoscaled]
            with_condition = partial(arm.watcher.count_with_condition, autoscaled, METRICS_AVAILABLE)
            wait_for(
                _progress(f"{METRICS_AVAILABLE} set", with_condition, len(autoscaled)),
                timeout=arm.scenario.timeout,
                what=f"{METRICS_AVAILABLE} on every autoscaled service",
                interval=1,
            )
            ticks = measure.total(arm.scrape(), measure.TICKS)
            wait_for(
                lambda: measure.total(arm.scrape(), measure.TICKS) >= ticks + 2,
                timeout=10 * arm.scenario.autoscale_interval + 60,
                what="two more autoscaler ticks",
                interval=1,
            )

        def no_recent_write() -> bool:
            arm.audit_log.refresh()
            last = arm.audit_log.last_write()
            return last is None or time.time() - last >= arm.scenario.settle_seconds

        wait_for(
            no_recent_write, timeout=arm.scenario.timeout, what="the operator to stop writing", interval=1
        )
        return True
    except WaitTimeoutError as e:
        say(f"  not settled: {e}")
        return False


def latency_summary(values: list[float]) -> dict[str, Any]:
    p50, p99 = measure.percentile(values, 0.5), measure.percentile(values, 0.99)
    return {
        "count": len(values),
        "p50_s": None if p50 is None else round(p50, 3),
        "p99_s": None if p99 is None else round(p99, 3),
        "max_s": round(max(values), 3) if values else None,
    }


def count_children(admin: client.ApiClient) -> dict[str, int]:
    """Objects labelled with an InferenceService, cluster-wide (the bench's check that every child exists)."""
    core, apps, policy = client.CoreV1Api(admin), client.AppsV1Api(admin), client.PolicyV1Api(admin)
    lists = {
        "deployments": apps.list_deployment_for_all_namespaces,
        "services": core.list_service_for_all_namespaces,
        "poddisruptionbudgets": policy.list_pod_disruption_budget_for_all_namespaces,
    }
    return {kind: len(call(label_selector=SERVICE_LABEL).items) for kind, call in lists.items()}


def per_reconcile(by_verb: dict[str, int], reconciles: float) -> dict[str, float] | None:
    return {verb: round(n / reconciles, 3) for verb, n in by_verb.items()} if reconciles else None


def run_batch(arm: Arm, refs: Sequence[ServiceRef]) -> dict[str, Any]:
    keys = [r.key for r in refs]
    before, started = arm.scrape(), time.time()
    say(f"{arm.name}: creating {len(refs)} InferenceServices")
    create_services(arm, refs)
    created = time.time()
    wait_for(
        _progress("Ready", lambda: arm.watcher.count_ready(keys), len(keys)),
        timeout=arm.scenario.timeout, what=f"{len(keys)} InferenceServices Ready", interval=1,
    )  # fmt: skip
    ready = time.time()
    say(f"{arm.name}: all {len(keys)} Ready after {ready - started:.0f} s; settling")
    settled_ok = settle(arm, refs)
    settled, after = time.time(), arm.scrape()
    arm.audit_log.refresh()
    requests = audit.select(arm.audit_log.requests, arm.audit_log.user, started, settled)
    reconciles = measure.delta(before, after, RECONCILE_METRIC[arm.name])
    by_verb = audit.count_by_verb(requests)
    children = [
        arm.watcher.children_applied[k] - arm.created[k] for k in keys if k in arm.watcher.children_applied
    ]
    to_ready = [arm.watcher.ready[k] - arm.created[k] for k in keys]
    return {
        "services": len(keys),
        "create_seconds": round(created - started, 1),
        "all_ready_seconds": round(ready - started, 1),
        "settled": settled_ok,
        "settle_seconds": round(settled - ready, 1),
        "to_children": latency_summary(children),
        "to_ready": latency_summary(to_ready),
        "reconciles": int(reconciles),
        "reconciles_by_trigger": measure.delta_by_label(before, after, RECONCILE_METRIC[arm.name], "trigger"),
        "requests_by_verb": by_verb,
        "requests_per_reconcile": per_reconcile(by_verb, reconciles),
        "requests_per_reconcile_total": round(len(requests) / reconciles, 3) if reconciles else None,
        "children": count_children(arm.admin),
        "requests_per_service": round(len(requests) / len(keys), 3),
        "writes_per_service": round(len(audit.writes(requests)) / len(keys), 3),
        "requests_by_verb_and_resource": audit.count_by_verb_and_resource(requests),
    }  # fmt: skip


def quiet_window(arm: Arm) -> dict[str, Any]:
    seconds = arm.scenario.quiet_seconds
    say(f"{arm.name}: quiet window of {seconds:.0f} s")
    operator_before, prometheus_before = arm.scrape(), arm.scrape_prometheus()
    start = time.time()
    time.sleep(seconds)  # the measurement itself: nothing changes, the operator should not write
    end = time.time()
    operator_after, prometheus_after = arm.scrape(), arm.scrape_prometheus()

    def logged_past_end() -> bool:
        arm.audit_log.refresh()
        return arm.audit_log.newest_received >= end

    wait_for(logged_past_end, timeout=60, what="the audit log to reach the window's end", interval=0.5)
    requests = audit.select(arm.audit_log.requests, arm.audit_log.user, start, end)
    writes = audit.writes(requests)
    result: dict[str, Any] = {
        "seconds": round(end - start, 1),
        "writes": len(writes),
        "write_requests": [w.describe() for w in writes],
        "requests_by_verb": audit.count_by_verb(requests),
        "ticks": None,
        "queries_per_tick": None,
        "prometheus_queries_per_tick": None,
    }
    if prometheus_before is not None and prometheus_after is not None:
        result["ticks"] = int(measure.delta(operator_before, operator_after, measure.TICKS))
        result["queries_per_tick"] = measure.queries_per_tick(operator_before, operator_after)
        result["prometheus_queries_per_tick"] = measure.prometheus_queries_per_tick(
            prometheus_before, prometheus_after, operator_before, operator_after
        )
    return result


def _start_operator(
    name: str, scenario: Scenario, kubeconfig: Path, prometheus: LocalPrometheus | None
) -> Operator:
    log_path = scenario.workdir / f"{name}-operator.log"
    if name == "naive":
        naive = NaiveOperatorProcess(kubeconfig=kubeconfig, log_path=log_path)
        naive.start()
        return naive
    assert prometheus is not None
    extra = ["--prometheus-url", prometheus.url, "--autoscale-interval", f"{scenario.autoscale_interval:g}"]
    operator = OperatorProcess(kubeconfig=kubeconfig, log_path=log_path, extra_args=extra)
    operator.start()
    return operator


def _wait_watching(audit_log: audit.AuditLog) -> None:
    def watching() -> bool:
        audit_log.refresh()
        watched = {r.resource for r in audit_log.requests if r.verb == "watch"}
        return {"inferenceservices", "deployments"} <= watched

    wait_for(
        watching, timeout=120, what="the operator to watch InferenceServices and Deployments", interval=0.5
    )


def run_arm(name: str, scenario: Scenario, cluster_name: str) -> dict[str, Any]:
    """The whole scenario against one operator on a fresh cluster, always deleted at the end."""
    scenario.workdir.mkdir(parents=True, exist_ok=True)
    policy = scenario.workdir / "audit-policy.yaml"
    policy.write_text(audit.AUDIT_POLICY)
    cluster = LocalCluster(
        name=cluster_name,
        # The API server's default Service range (10.0.0.0/24) has 254 ClusterIPs: too few for 1000 services.
        extra_args=["--kube-audit-policy", str(policy), "--extra-args", f"kube-apiserver={SERVICE_RANGE}"],
        nodes=build_fleet_nodes(scenario.nodes),
    )
    started = time.time()
    prometheus: LocalPrometheus | None = None
    operator: Operator | None = None
    watcher: FleetWatcher | None = None
    try:
        say(f"{name}: creating cluster {cluster_name} with {scenario.nodes} GPU nodes")
        cluster.create()
        admin = cluster.api_client()
        install_crds(admin)
        for i in range(scenario.namespaces):
            client.CoreV1Api(admin).create_namespace({"metadata": {"name": f"bench-reconcile-{i}"}})
        kubeconfig = create_operator_identity(admin, cluster.kubeconfig, scenario.workdir / f"{name}-sa.yaml")
        audit_log = audit.AuditLog(cluster.logs_dir / "audit.log", operator_user())
        if name == "inferfleet":
            prometheus = LocalPrometheus(workdir=scenario.workdir / "prometheus")
            prometheus.start()
        operator = _start_operator(name, scenario, kubeconfig, prometheus)
        _wait_watching(audit_log)
        watcher = FleetWatcher(cluster.kubeconfig)
        watcher.start()
        arm = Arm(name, scenario, admin, operator, audit_log, watcher, prometheus)
        result: dict[str, Any] = {
            "batch": run_batch(arm, plan_services(0, scenario.services, scenario.namespaces))
        }
        result["quiet"] = quiet_window(arm)
        result["rss_mb"] = {str(scenario.services): arm.rss_mb()}
        if scenario.second_batch:
            more = plan_services(scenario.services, scenario.services, scenario.namespaces)
            result["second_batch"] = run_batch(arm, more)
            result["rss_mb"][str(2 * scenario.services)] = arm.rss_mb()
        audit_log.refresh()
        result["operator_requests_by_verb"] = audit.count_by_verb(audit_log.requests)
        result["operator_requests_by_verb_and_resource"] = audit.count_by_verb_and_resource(
            audit_log.requests
        )
        result["watch_errors"] = watcher.errors[-10:]
        result["wall_seconds"] = round(time.time() - started, 1)
        result["operator_log"] = str(scenario.workdir / f"{name}-operator.log")
        return result
    finally:
        if watcher is not None:
            watcher.stop()
        if operator is not None:
            operator.stop()
        if prometheus is not None:
            prometheus.stop()
        cluster.delete()
        say(f"{name}: cluster {cluster_name} deleted")
