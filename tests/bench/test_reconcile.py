"""The reconcile benchmark's pure parts: audit counting, percentiles, queries per tick, the naive planner."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bench.reconcile import audit, measure
from bench.reconcile.fleet import (
    PRODUCTS,
    ServiceRef,
    build_fleet_nodes,
    check_capacity,
    plan_services,
    service_manifest,
)
from bench.reconcile.naive_operator import desired_status, observe, plan
from bench.reconcile.report import figures, table, targets
from bench.reconcile.watcher import is_ready

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.children import Owner
from inferfleet.planning.inventory import build_gpu_node, summarize_products
from inferfleet.planning.service import plan_service

OPERATOR = "system:serviceaccount:bench-reconcile-operator:operator"
ADMIN = "kubernetes-admin"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def event(audit_id: str, user: str, verb: str, at: str, stage: str = "ResponseComplete", **ref: str) -> str:
    body: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": f"/apis/x/{ref.get('resource', 'healthz')}?limit=500",
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "requestReceivedTimestamp": f"2026-01-02T03:04:{at}Z",
        "stageTimestamp": f"2026-01-02T03:04:{at}Z",
        "responseStatus": {"metadata": {}, "code": 200},
    }
    if ref:
        body["objectRef"] = ref
    return json.dumps(body)


LOG = [
    event("a1", OPERATOR, "list", "05.000100", resource="nodes", apiVersion="v1"),
    event("a2", OPERATOR, "watch", "05.100000", stage="ResponseStarted", resource="pods"),
    event("a3", OPERATOR, "patch", "06.250000", resource="deployments", namespace="ns", name="svc"),
    event("a4", ADMIN, "create", "06.300000", resource="inferenceservices", namespace="ns", name="svc"),
    event(
        "a5",
        OPERATOR,
        "patch",
        "07.000000",
        resource="inferenceservices",
        subresource="status",
        namespace="ns",
        name="svc",
    ),
    event("a2", OPERATOR, "watch", "05.100000", resource="pods"),  # the watch ends: same request
    event("a6", OPERATOR, "get", "09.999999", resource="inferenceservices", namespace="ns", name="svc"),
    event("a7", OPERATOR, "get", "10.000000"),  # a non-resource request: counted by its path
    '{"kind": "Event", "auditID": "torn',
]


def test_audit_counts_each_request_once_by_user_and_window() -> None:
    requests = list(audit.parse_lines(LOG))
    assert [r.audit_id for r in requests] == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    window = audit.select(requests, OPERATOR, start=T0 + 0.0001, end=T0 + 5)
    assert [r.audit_id for r in window] == ["a1", "a2", "a3", "a5", "a6"]
    assert audit.count_by_verb(window) == {
        "get": 1, "list": 1, "watch": 1, "create": 0, "update": 0, "patch": 2, "delete": 0,
    }  # fmt: skip
    assert audit.count_by_verb_and_resource(window) == {
        "patch deployments": 1,
        "get inferenceservices": 1,
        "list nodes": 1,
        "patch inferenceservices/status": 1,
        "watch pods": 1,
    }
    assert [w.describe() for w in audit.writes(window)] == [
        "patch deployments ns/svc (200)",
        "patch inferenceservices/status ns/svc (200)",
    ]


def test_audit_window_is_half_open_and_other_users_are_left_out() -> None:
    requests = list(audit.parse_lines(LOG))
    ending = audit.select(requests, OPERATOR, start=T0 + 4, end=T0 + 5)  # a7 is at exactly T0 + 5
    assert [r.audit_id for r in ending] == ["a6"]
    assert [r.audit_id for r in audit.select(requests, OPERATOR, start=T0 + 5)] == ["a7"]
    assert [r.resource for r in audit.select(requests, OPERATOR, start=T0 + 5)] == ["/apis/x/healthz"]
    assert [r.audit_id for r in audit.select(requests, ADMIN)] == ["a4"]


def test_audit_log_reads_only_complete_lines_as_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = audit.AuditLog(path, OPERATOR)
    assert log.refresh() == []  # not there yet
    path.write_text(LOG[0] + "\n" + LOG[1] + "\n" + LOG[2][:40])
    assert [r.audit_id for r in log.refresh()] == ["a1", "a2"]
    assert log.last_write() is None
    with path.open("a") as f:
        f.write(LOG[2][40:] + "\n" + LOG[3] + "\n" + LOG[5] + "\n")
    assert [r.audit_id for r in log.refresh()] == ["a3"]  # a4 is the admin's, a2 was counted
    assert log.last_write() == pytest.approx(T0 + 1.25)
    assert log.newest_received == pytest.approx(T0 + 1.3)
    assert [r.audit_id for r in log.requests] == ["a1", "a2", "a3"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert measure.percentile(values, 0.5) == 50.0
    assert measure.percentile(values, 0.99) == 99.0
    assert measure.percentile(values, 1.0) == 100.0
    assert measure.percentile([0.3, 0.1], 0.5) == 0.1
    assert measure.percentile([], 0.5) is None


def operator_scrape(reconciles: tuple[int, int], queries: int, ticks: int) -> str:
    return f"""# HELP inferfleet_reconcile_total Reconciles.
# TYPE inferfleet_reconcile_total counter
inferfleet_reconcile_total{{trigger="inferenceservice",result="success"}} {reconciles[0]}.0
inferfleet_reconcile_total{{trigger="deployment",result="error"}} {reconciles[1]}.0
# HELP inferfleet_prometheus_queries_total Queries.
# TYPE inferfleet_prometheus_queries_total counter
inferfleet_prometheus_queries_total{{kind="fleet"}} {queries}.0
# HELP inferfleet_autoscaler_ticks_total Ticks.
# TYPE inferfleet_autoscaler_ticks_total counter
inferfleet_autoscaler_ticks_total {ticks}.0
"""


def prometheus_scrape(queries: int) -> str:
    return f"""# TYPE prometheus_http_requests_total counter
prometheus_http_requests_total{{code="200",handler="/api/v1/query"}} {queries}
prometheus_http_requests_total{{code="400",handler="/api/v1/query"}} 1
prometheus_http_requests_total{{code="200",handler="/metrics"}} 500
"""


def test_queries_per_tick_from_two_scrapes() -> None:
    before = measure.parse_scrape(operator_scrape((10, 1), queries=7, ticks=7))
    after = measure.parse_scrape(operator_scrape((510, 3), queries=67, ticks=67))
    assert measure.delta(before, after, measure.RECONCILES) == 502
    assert measure.delta(before, after, measure.RECONCILES, result="error") == 2
    assert measure.delta_by_label(before, after, measure.RECONCILES, "trigger") == {
        "deployment": 2,
        "inferenceservice": 500,
    }
    assert measure.queries_per_tick(before, after) == 1.0
    prom_before = measure.parse_scrape(prometheus_scrape(100))
    prom_after = measure.parse_scrape(prometheus_scrape(220))
    assert measure.prometheus_queries_per_tick(prom_before, prom_after, before, after) == 2.0
    assert measure.queries_per_tick(after, after) is None  # no tick: no ratio


def test_fleet_spreads_products_zones_and_autoscaling() -> None:
    nodes = build_fleet_nodes(30)
    assert len({n["metadata"]["name"] for n in nodes}) == 30
    products = [n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes]
    assert {p: products.count(p) for p in set(products)} == {p.name: 10 for p in PRODUCTS}
    assert {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes} == {
        "zone-a", "zone-b", "zone-c",
    }  # fmt: skip
    refs = plan_services(0, 6, namespaces=4)
    assert [r.autoscaled for r in refs] == [True, False] * 3
    assert len({r.namespace for r in refs}) == 4
    check_capacity(plan_services(0, 240, 5), 30)  # 80 GPUs per product, 80 services each
    with pytest.raises(SystemExit, match="short"):
        check_capacity(plan_services(0, 241, 5), 30)


def ready_nodes(count: int) -> list[dict[str, Any]]:
    nodes = build_fleet_nodes(count)
    for node in nodes:
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return nodes


def engine_pod(name: str, service: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "bench-reconcile-0",
            "labels": {"inferfleet.io/service": service},
        },
        "spec": {"nodeName": node, "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": {"phase": "Running"},
    }


def test_naive_observation_plans_the_same_children_as_inferfleet() -> None:
    nodes = ready_nodes(6)
    pods = [engine_pod("llama-0000-abc", "llama-0000", "h100-0000"), {"metadata": {"name": "pending"}}]
    ref = ServiceRef("bench-reconcile-0", "llama-0000", PRODUCTS[0].name, autoscaled=True)
    body = service_manifest(ref)
    body["metadata"] |= {"uid": "uid-1", "generation": 1}
    snapshot = observe(nodes, pods)
    assert len(snapshot.gpu_nodes) == 6
    assert [(p.node, p.gpus) for p in snapshot.bound] == [("h100-0000", 1)]
    assert snapshot.engine_pods == {("bench-reconcile-0", "llama-0000"): (("llama-0000-abc", "h100-0000"),)}

    naive = plan(body, snapshot)
    gpu_nodes = [n for n in (build_gpu_node(node) for node in nodes) if n is not None]
    owner = Owner(name="llama-0000", namespace="bench-reconcile-0", uid="uid-1")
    expected = plan_service(
        owner, InferenceServiceSpec.model_validate(body["spec"]), summarize_products(gpu_nodes)
    )
    assert naive.blocked is None
    assert [c["kind"] for c in naive.children] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert naive.children == expected.children
    assert naive.shard_plan == expected.shard_plan
    assert naive.children[0]["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }


def test_naive_status_is_ready_once_the_deployment_is() -> None:
    snapshot = observe(ready_nodes(3), [engine_pod("llama-0000-abc", "llama-0000", "h100-0000")])
    body = service_manifest(ServiceRef("bench-reconcile-0", "llama-0000", PRODUCTS[0].name, False))
    body["metadata"] |= {"uid": "uid-1", "generation": 2}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    service_plan = plan(body, snapshot)
    rolling = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1}}
    assert desired_status(body, service_plan, rolling, snapshot, now)["phase"] == "Deploying"
    done = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }
    status = desired_status(body, service_plan, done, snapshot, now)
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == 2
    assert status["placement"] == [{"replica": 0, "domain": "zone-a", "nodes": ["h100-0000"]}]
    assert is_ready({"metadata": body["metadata"], "status": status})
    assert not is_ready({"metadata": body["metadata"] | {"generation": 3}, "status": status})


def arm(writes: int, queries_per_tick: float | None, rss: float) -> dict[str, Any]:
    return {
        "batch": {"to_ready": {"p50_s": 1.5, "p99_s": 4.0}, "requests_per_reconcile": {"list": 0.0}},
        "quiet": {
            "writes": writes,
            "queries_per_tick": queries_per_tick,
            "prometheus_queries_per_tick": None,
        },
        "rss_mb": {"500": rss / 2, "1000": rss},
    }


def test_report_judges_inferfleet_against_the_targets() -> None:
    report = {
        "params": {
            "services": 500,
            "nodes": 200,
            "namespaces": 5,
            "quiet_seconds": 300,
            "autoscale_interval": 5,
        },
        "arms": {"inferfleet": arm(writes=2, queries_per_tick=1.0, rss=320.0), "naive": arm(0, None, 100.0)},
    }
    verdicts = {k: v["verdict"] for k, v in targets(report).items()}
    assert verdicts == {
        "writes in the quiet window": "MISS",
        "Prometheus queries per tick (operator)": "PASS",
        "cross-check: served by Prometheus": "n/a",
        "operator RSS at 1000 services (MB)": "MISS",
    }
    lines = {line[:44].strip(): line.split() for line in table(report).splitlines()}
    assert lines["Prometheus queries per tick (operator)"][-4:] == ["1.00", "n/a", "1", "PASS"]
    assert lines["create -> Ready p99 (s)"][-2:] == ["4.00", "4.00"]
    assert all(f.label.strip() in lines for f in figures(500))
