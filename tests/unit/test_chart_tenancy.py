"""The chart's tenancy values (Prometheus access, limits, policy) reach the operator as its config.

Renders the chart with helm and parses the container's args with `inferfleet run`'s own parser,
so a value the chart sets but the operator does not read (or reads otherwise) fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.cli import build_config, build_parser
from inferfleet.planning.policy import TenantPolicy
from inferfleet.runtime.config import OperatorConfig, PrometheusConfig
from tests.unit.test_chart_gateway import GATEWAY_URL_WIRED
from tests.unit.test_chart_render import CHART, HELM, NS, container, helm, one
from tests.unit.test_chart_render import render as render_chart

pytestmark = pytest.mark.skipif(not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup`")


def render(*sets: str) -> list[dict[str, Any]]:
    # Until `inferfleet run` has --gateway-url (issue 15), the chart's default args carry a flag
    # its parser refuses; test_chart_gateway checks that flag once it exists.
    return render_chart(*sets, *(() if GATEWAY_URL_WIRED else ("gateway.enabled=false",)))


def operator_config(docs: list[dict[str, Any]]) -> OperatorConfig:
    return build_config(build_parser().parse_args(container(docs)["args"]))


def test_by_default_custom_queries_are_off_tls_is_verified_and_the_policy_is_strict() -> None:
    config = operator_config(render())
    assert config.prometheus == PrometheusConfig()
    assert config.policy == TenantPolicy()


def test_prometheus_credentials_and_ca_come_from_secrets_mounted_read_only() -> None:
    docs = render(
        "prometheus.url=https://prom.monitoring.svc:9090",
        "prometheus.caSecret=prom-ca",
        "prometheus.authSecret=prom-auth",
        "prometheus.authType=basic",
        "prometheus.timeoutSeconds=3",
        "prometheus.maxSeries=500",
        "prometheus.customQueries=true",
    )
    prometheus = operator_config(docs).prometheus
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in one(docs, "Deployment", NS)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    assert volumes["prometheus-auth"]["secret"]["secretName"] == "prom-auth"
    assert mounts["prometheus-ca"]["readOnly"]
    assert mounts["prometheus-auth"]["readOnly"]
    assert prometheus.ca_file == f"{mounts['prometheus-ca']['mountPath']}/ca.crt"
    assert prometheus.username_file == f"{mounts['prometheus-auth']['mountPath']}/username"
    assert prometheus.password_file == f"{mounts['prometheus-auth']['mountPath']}/password"
    assert prometheus.bearer_token_file is None
    assert (prometheus.timeout_seconds, prometheus.max_series, prometheus.custom_queries) == (3, 500, True)
    assert not prometheus.insecure_skip_verify


def test_a_bearer_token_secret_is_read_from_its_token_key() -> None:
    prometheus = operator_config(render("prometheus.authSecret=prom-auth")).prometheus
    assert prometheus.bearer_token_file == "/etc/inferfleet/prometheus-auth/token"
    assert prometheus.username_file is None


def test_limits_and_policy_values_become_the_tenant_policy() -> None:
    docs = render(
        "limits.maxReplicasPerService=16",
        "policy.allowedCapabilities={IPC_LOCK,SYS_NICE}",
        "policy.allowedPriorityClasses={inference-high}",
        "policy.gpuResourceNames={nvidia.com/gpu}",
    )
    assert operator_config(docs).policy == TenantPolicy(
        max_replicas_per_service=16,
        allowed_capabilities=frozenset({"IPC_LOCK", "SYS_NICE"}),
        allowed_priority_classes=frozenset({"inference-high"}),
        gpu_resource_names=frozenset({"nvidia.com/gpu"}),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("prometheus.url=https://user:secret@prom:9090", "does not match pattern"),
        ("limits.maxReplicasPerService=5000", "maximum"),
        ("limits.maxReplicasPerService=0", "minimum"),
        ("prometheus.authType=digest", "value must be one of"),
        ("policy.allowedCapabilities={cap_sys_admin}", "does not match pattern"),
    ],
)
def test_the_schema_refuses_bad_tenancy_values(value: str, message: str) -> None:
    result = helm("template", "fleet", str(CHART), "--set", value)
    assert result.returncode != 0
    assert message in result.stderr
