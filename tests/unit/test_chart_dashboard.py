"""The chart's Grafana dashboard: its queries name the real metrics and labels of the operator and
of its gateway (issue 15's contract), and the ConfigMap the Grafana sidecar loads is rendered only
when asked for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import inferfleet.kube.apply
import inferfleet.metrics.operator
import inferfleet.metrics.prometheus
from inferfleet.gateway.metrics import Series
from tests.unit.test_chart_render import BINARIES, CHART, HELM, NS, helm, render

DASHBOARD = CHART / "dashboards" / "inferfleet.json"
SCRAPE_LABELS = {"job", "instance"}
"""Labels Prometheus adds to every scraped series."""
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def series_of(holders: list[Any]) -> dict[str, set[str]]:
    """Every series name the metrics held by these modules or objects expose (as prometheus-client
    names them) -> its label names."""
    series: dict[str, set[str]] = {}
    for holder in holders:
        for held in vars(holder).values():
            metric = held.family if isinstance(held, Series) else held
            if isinstance(metric, MetricWrapperBase):
                [family] = metric.describe()
                labels = set(metric._labelnames)
                for suffix in SUFFIXES[family.type]:
                    series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def exposed_series() -> dict[str, set[str]]:
    return series_of([inferfleet.metrics.operator, inferfleet.metrics.prometheus, inferfleet.kube.apply])


GATEWAY_SERVICE_LABELS = {"namespace", "inferfleet_io_service"}
# The gateway's metrics as issue 15's contract names them: name -> (type, labels beyond the service's).
GATEWAY_CONTRACT: dict[str, tuple[str, set[str]]] = {
    "inferfleet_gateway_arrivals_total": ("counter", set()),
    "inferfleet_gateway_queued_requests": ("gauge", set()),
    "inferfleet_gateway_in_flight_requests": ("gauge", {"endpoint"}),
    "inferfleet_gateway_responses_total": ("counter", {"code"}),
    "inferfleet_gateway_retries_total": ("counter", {"reason"}),
    "inferfleet_gateway_queue_wait_seconds": ("histogram", set()),
    "inferfleet_gateway_time_to_first_byte_seconds": ("histogram", set()),
    "inferfleet_gateway_request_duration_seconds": ("histogram", set()),
    "inferfleet_gateway_activations_total": ("counter", set()),
}


def gateway_series() -> dict[str, set[str]]:
    """The series of GATEWAY_CONTRACT, named as exposed (a counter's name includes _total)."""
    series: dict[str, set[str]] = {}
    for name, (kind, labels) in GATEWAY_CONTRACT.items():
        for suffix in ("",) if kind != "histogram" else SUFFIXES["histogram"]:
            series[name + suffix] = (
                GATEWAY_SERVICE_LABELS | labels | ({"le"} if suffix == "_bucket" else set())
            )
    return series


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def expressions() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


SELECTOR = re.compile(r"\b(inferfleet_[a-z0-9_]+)(?:\{([^}]*)\})?")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def test_every_query_uses_metrics_and_labels_the_operator_and_gateway_expose() -> None:
    series = exposed_series() | gateway_series()
    used: set[str] = set()
    for expr in expressions():
        names = set()
        for name, matchers in SELECTOR.findall(GROUPING.sub("", expr)):  # not the labels of `by (...)`
            assert name in series, f"{name} in {expr!r} is not an operator or gateway metric"
            names.add(name)
            for matcher in filter(None, (m.strip() for m in matchers.split(","))):
                label = re.split(r"=~|!=|!~|=", matcher)[0].strip()
                assert label in series[name] | SCRAPE_LABELS, f"{name} has no label {label!r}"
        assert names, f"no operator metric in {expr!r}"
        known_labels = set().union(*(series[n] for n in names)) | SCRAPE_LABELS
        for group in GROUPING.findall(expr):
            assert {g.strip() for g in group.split(",")} <= known_labels, expr
        used |= names
    # Each panel family the dashboard promises draws on its metric.
    assert {
        "inferfleet_reconcile_total",
        "inferfleet_reconcile_duration_seconds_bucket",
        "inferfleet_inferenceservice_replicas",
        "inferfleet_placement_failures_total",
        "inferfleet_prometheus_query_duration_seconds_bucket",
        "inferfleet_prometheus_query_errors_total",
    } <= used
    # The gateway's panels: requests by code, errors, retries, queue, queue wait, TTFT, in flight
    # per endpoint, duration and activations draw on every metric of its contract.
    assert {
        name + ("_bucket" if kind == "histogram" else "") for name, (kind, _) in GATEWAY_CONTRACT.items()
    } <= used


def test_the_gateway_exposes_the_metrics_of_its_contract() -> None:
    gateway_metrics = pytest.importorskip(
        "inferfleet.gateway.metrics", reason="the gateway is not written yet"
    )
    assert series_of([gateway_metrics.GatewayMetrics()]) == gateway_series()


def test_gateway_panels_follow_the_namespace_variable() -> None:
    gateway_selectors = [
        (name, matchers)
        for expr in expressions()
        for name, matchers in SELECTOR.findall(GROUPING.sub("", expr))
        if name.startswith("inferfleet_gateway_")
    ]
    assert gateway_selectors
    for name, matchers in gateway_selectors:
        assert 'namespace=~"$namespace"' in matchers, name


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is missing"
)
def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    # Grafana's variables filled in as Grafana would, then each query checked as a recording rule.
    filled = [e.replace("$__rate_interval", "1m").replace("$namespace", ".*") for e in expressions()]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(filled)]}
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_asks_for_its_prometheus_data_source() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    [datasource] = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    panel_ids = [p["id"] for p in board["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


@pytest.mark.skipif(not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup`")
@pytest.mark.parametrize("enabled", [True, False])
def test_dashboard_config_map_is_rendered_only_when_enabled(enabled: bool) -> None:
    docs = render(f"grafana.dashboard.enabled={str(enabled).lower()}", "grafana.dashboard.labels.team=ml")
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    if not enabled:
        assert config_maps == []
        return
    [config_map] = config_maps
    assert config_map["metadata"]["namespace"] == NS
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["team"] == "ml"
    assert json.loads(config_map["data"]["inferfleet.json"]) == dashboard()


@pytest.mark.skipif(not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup`")
def test_dashboard_config_map_can_go_to_grafanas_namespace() -> None:
    docs = render("grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring")
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "monitoring"


@pytest.mark.skipif(not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup`")
def test_schema_refuses_unknown_dashboard_values() -> None:
    result = helm(
        "template",
        "fleet",
        str(CHART),
        "--kube-version",
        BINARIES.kube_version,
        "--set",
        "grafana.dashboard.folder=ml",
    )
    assert result.returncode == 1
    assert "at '/grafana/dashboard': additional properties 'folder' not allowed" in result.stderr
