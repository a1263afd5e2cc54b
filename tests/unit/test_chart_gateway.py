"""The chart's gateway (`inferfleet gateway`, issue 15): its own Deployment, Service, budget,
identity and least-privilege RBAC, in the namespaces the operator serves, and the operator
pointing status.endpoint at it.

Renders with the helm binary of the local cluster's build; no cluster.
"""

from __future__ import annotations

import argparse
import ast
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferfleet.cli import build_parser
from inferfleet.gateway.config import GatewayConfig
from inferfleet.planning.names import child_labels
from tests.unit.test_chart_render import (
    BINARIES,
    CHART,
    FULLNAME,
    HELM,
    NS,
    OPERATOR,
    RELEASE,
    Grant,
    container,
    grants,
    helm,
    kinds,
    kube_client_methods_named,
    of,
    one,
    render,
)

pytestmark = pytest.mark.skipif(not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup`")

GATEWAY = f"{FULLNAME}-gateway"
GATEWAY_SA = {"kind": "ServiceAccount", "name": GATEWAY, "namespace": NS}
GATEWAY_URL = f"http://{GATEWAY}.{NS}.svc:80"


def subcommand(name: str) -> argparse.ArgumentParser | None:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser | None = sub.choices.get(name)
    return parser


GATEWAY_COMMAND = subcommand("gateway")
run_parser = subcommand("run")
GATEWAY_URL_WIRED = run_parser is not None and "--gateway-url" in run_parser._option_string_actions
"""`inferfleet run --gateway-url` exists (the lead's part of issue 15); the chart passes it."""


def gateway(docs: list[dict[str, Any]], kind: str, namespace: str | None = NS) -> dict[str, Any]:
    return one(docs, kind, namespace, component="gateway")


def gateway_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = gateway(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def gateway_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return container(docs, component="gateway")


def test_defaults_deploy_two_gateway_replicas_behind_a_service() -> None:
    docs = render()
    assert kinds(docs, "gateway") == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    deployment = gateway(docs, "Deployment")
    assert deployment["metadata"]["name"] == GATEWAY
    assert deployment["spec"]["replicas"] == 2
    # A rollout never drops below the configured replicas.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    c = gateway_container(docs)
    assert c["image"] == container(docs)["image"]  # the operator's image
    assert c["args"] == [
        "gateway",
        "--host=0.0.0.0",
        "--port=8080",
        "--metrics-address=0.0.0.0",
        "--metrics-port=8081",
        "--max-attempts=3",
        "--retry-budget=0.2",
        "--routing=least-load",
        "--prefix-load-bound=1",  # helm prints the float 1.0 as 1
        "--prefix-load-slack=4",
        "--workers=1",
        "--shutdown-seconds=285",  # the grace period, less the preStop sleep and 5 s
    ]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "metrics": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert gateway_pod(docs)["serviceAccountName"] == GATEWAY

    service = gateway(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"},
    ]
    selector = service["spec"]["selector"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    # Neither component's selector picks the other's pods.
    operator_pod_labels = one(docs, "Deployment", NS)["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= operator_pod_labels.items()
    assert not one(docs, "Service", NS)["spec"]["selector"].items() <= selector.items()


def test_the_operator_names_the_gateway_service_as_the_endpoint_base() -> None:
    docs = render()
    service = gateway(docs, "Service")
    [http] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{http}"
    assert url == GATEWAY_URL
    assert f"--gateway-url={url}" in container(docs)["args"]

    other = render("gateway.service.port=8000", "fullnameOverride=fleet")
    assert "--gateway-url=http://fleet-gateway.inferfleet-system.svc:8000" in container(other)["args"]


def test_gateway_disabled_renders_no_gateway_object_and_no_gateway_url() -> None:
    docs = render("gateway.enabled=false", "serviceMonitor.enabled=true", "networkPolicy.enabled=true")
    assert kinds(docs, "gateway") == []
    assert not [a for a in container(docs)["args"] if a.startswith("--gateway-url")]


def test_gateway_pod_meets_the_restricted_pod_security_profile() -> None:
    pod = gateway_pod(render())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)


def test_a_terminating_replica_leaves_the_service_before_it_stops_and_streams_get_time() -> None:
    pod = gateway_pod(render())
    [c] = pod["containers"]
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "10"]}}
    assert pod["terminationGracePeriodSeconds"] == 300
    # SIGTERM comes after the sleep; the drain ends before the kubelet's SIGKILL.
    assert "--shutdown-seconds=285" in c["args"]
    [short] = gateway_pod(
        render("gateway.terminationGracePeriodSeconds=12", "gateway.preStopSleepSeconds=10")
    )["containers"]
    assert "--shutdown-seconds=1" in short["args"]

    result = helm("template", RELEASE, str(CHART), "--kube-version", BINARIES.kube_version,
                  "--set", "gateway.preStopSleepSeconds=60",
                  "--set", "gateway.terminationGracePeriodSeconds=60")  # fmt: skip
    assert result.returncode == 1
    assert "gateway.preStopSleepSeconds must be less than gateway.terminationGracePeriodSeconds" in (
        result.stderr
    )


def test_replicas_spread_over_nodes_softly_and_a_budget_keeps_one_up() -> None:
    docs = render()
    selector = gateway(docs, "Deployment")["spec"]["selector"]
    spread = gateway_pod(docs)["topologySpreadConstraints"]
    [by_node] = [s for s in spread if s["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node["whenUnsatisfiable"] == "ScheduleAnyway"  # never Pending for want of a node
    assert by_node["labelSelector"] == selector
    pdb = gateway(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": selector}

    # One replica: a budget of one would block every node drain.
    single = render("gateway.replicas=1")
    assert gateway(single, "Deployment")["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in kinds(single, "gateway")


def test_values_reach_the_gateway_args_ports_and_resources() -> None:
    docs = render(
        "gateway.replicas=3",
        "gateway.maxAttempts=5",
        "gateway.retryBudget=0.05",
        "gateway.metricsPort=9091",
        "gateway.service.type=LoadBalancer",
        "gateway.resources.requests.cpu=2",
        "gateway.resources.limits.memory=2Gi",
    )
    c = gateway_container(docs)
    assert {"--max-attempts=5", "--retry-budget=0.05", "--metrics-port=9091"} <= set(c["args"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8080, "metrics": 9091}
    assert c["resources"] == {"requests": {"cpu": 2, "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
    service = gateway(docs, "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    assert {"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"} in service["spec"][
        "ports"
    ]
    assert gateway(docs, "Deployment")["spec"]["replicas"] == 3


def test_the_gateway_serves_exactly_the_namespaces_the_operator_serves() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    namespaces = ["--namespace=team-a", "--namespace=team-b"]
    assert [a for a in container(docs)["args"] if a.startswith("--namespace")] == namespaces
    assert [a for a in gateway_container(docs)["args"] if a.startswith("--namespace")] == namespaces
    # Namespaced: a Role in each, and nothing cluster-wide.
    assert kinds(docs, "gateway") == [
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    for ns in ("team-a", "team-b"):
        assert grants(gateway(docs, "Role", ns)["rules"]) == GATEWAY_GRANTS
        binding = gateway(docs, "RoleBinding", ns)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": GATEWAY,
        }
        assert binding["subjects"] == [GATEWAY_SA]


# Each Kubernetes API call of the gateway and the grants it needs. The rules are exactly the
# contract of issue 15 (a new verb fails the test below); the gateway's source is searched for the
# client methods it names, and a call not listed here, or not granted, fails the test after it.
LIST_WATCH = ("list", "watch")
GATEWAY_CALLS: dict[str, set[Grant]] = {
    # Its cache of InferenceServices (model name, slots, queue bound, scaling): a list, then a watch.
    "list_cluster_custom_object": {("inferfleet.io", "inferenceservices", v) for v in LIST_WATCH},
    "list_namespaced_custom_object": {("inferfleet.io", "inferenceservices", v) for v in LIST_WATCH},
    # Scale from zero: a JSON patch that tests for 0 replicas and sets 1 (only the scale subresource).
    "patch_namespaced_custom_object_scale": {("inferfleet.io", "inferenceservices/scale", "patch")},
    # The engine endpoints it routes to (ready, terminating), as EndpointSlices: a list, then a watch.
    "list_endpoint_slice_for_all_namespaces": {("discovery.k8s.io", "endpointslices", v) for v in LIST_WATCH},
    "list_namespaced_endpoint_slice": {("discovery.k8s.io", "endpointslices", v) for v in LIST_WATCH},
}  # fmt: skip
GATEWAY_GRANTS: set[Grant] = set().union(*GATEWAY_CALLS.values())


@pytest.mark.parametrize("sets", [(), ("watchNamespaces={a}",)], ids=["cluster-wide", "namespaced"])
def test_the_gateway_is_granted_exactly_its_calls_and_nothing_of_the_operators(sets: tuple[str, ...]) -> None:
    docs = render(*sets, "ha.enabled=true")
    roles = [d for d in of(docs, "gateway") if d["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        granted = grants(role["rules"])
        assert {"missing": GATEWAY_GRANTS - granted, "extra": granted - GATEWAY_GRANTS} == {
            "missing": set(),
            "extra": set(),
        }
    # Its bindings bind only its own roles to only its own ServiceAccount.
    gateway_roles = {(r["kind"], r["metadata"]["name"]) for r in roles}
    for binding in [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]:
        mine = (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in gateway_roles
        assert mine == (binding["subjects"] == [GATEWAY_SA]), binding["metadata"]


GATEWAY_SOURCE = OPERATOR / "gateway"


def gateway_sources() -> list[ast.AST]:
    """The gateway's modules, and the functions of inferfleet.kube it imports (scale_from_zero...)."""
    trees: list[ast.AST] = [ast.parse(f.read_text(), str(f)) for f in sorted(GATEWAY_SOURCE.rglob("*.py"))]
    imported = [
        node
        for tree in list(trees)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inferfleet.kube.")
    ]
    for node in imported:
        module = OPERATOR / Path(*(node.module or "").split(".")[1:]).with_suffix(".py")
        names = {alias.name for alias in node.names}
        functions = [
            f
            for f in ast.parse(module.read_text()).body
            if isinstance(f, ast.FunctionDef) and f.name in names
        ]
        trees += functions
    return trees


@pytest.mark.skipif(GATEWAY_COMMAND is None, reason="`inferfleet gateway` is not in cli.py yet")
def test_every_kubernetes_client_call_of_the_gateway_is_in_the_table_and_granted() -> None:
    named = kube_client_methods_named(gateway_sources())
    assert named, "no Kubernetes client call found in gateway/: map its calls in GATEWAY_CALLS"
    assert named <= set(GATEWAY_CALLS), named - set(GATEWAY_CALLS)
    needed = set().union(*(GATEWAY_CALLS[n] for n in named))
    for sets in [(), ("watchNamespaces={a}",)]:
        [role] = [d for d in of(render(*sets), "gateway") if d["kind"] in ("ClusterRole", "Role")]
        assert needed - grants(role["rules"]) == set()


def test_the_charts_gateway_defaults_are_the_gateways_own() -> None:
    """values.yaml and GatewayConfig each state the defaults: they must not drift apart."""
    args = build_parser().parse_args(gateway_container(render())["args"])
    default = GatewayConfig()
    for name in (
        "max_attempts",
        "retry_budget",
        "routing",
        "prefix_load_bound",
        "prefix_load_slack",
        "workers",
    ):
        assert getattr(args, name) == getattr(default, name), name


@pytest.mark.skipif(GATEWAY_COMMAND is None, reason="`inferfleet gateway` is not in cli.py yet")
def test_the_rendered_args_parse_with_the_gateways_own_parser() -> None:
    assert GATEWAY_COMMAND is not None
    docs = render(
        "watchNamespaces={a,b}",
        "gateway.maxAttempts=4",
        "gateway.retryBudget=0.1",
        "gateway.routing=prefix-affinity",
        "gateway.prefixLoadBound=0.5",
        "gateway.prefixLoadSlack=7",
        "gateway.workers=4",
    )
    args = build_parser().parse_args(gateway_container(docs)["args"])
    assert (args.routing, args.prefix_load_bound, args.prefix_load_slack, args.workers) == (
        "prefix-affinity",
        0.5,
        7,
        4,
    )
    assert args.command == "gateway"
    assert (args.host, args.port, args.metrics_address, args.metrics_port) == (
        "0.0.0.0",
        8080,
        "0.0.0.0",
        8081,
    )
    assert (args.max_attempts, args.retry_budget, args.shutdown_seconds) == (4, 0.1, 285)
    assert args.namespace == ["a", "b"]


@pytest.mark.skipif(not GATEWAY_URL_WIRED, reason="`inferfleet run --gateway-url` is not in cli.py yet")
def test_the_operator_parses_the_gateway_url() -> None:
    args = build_parser().parse_args(container(render())["args"])
    assert args.gateway_url == GATEWAY_URL


@pytest.mark.parametrize("enabled", [True, False])
def test_the_gateway_service_monitor_honours_the_series_own_labels(enabled: bool) -> None:
    docs = render(f"serviceMonitor.enabled={str(enabled).lower()}", "serviceMonitor.labels.release=kps")
    monitors = [d for d in of(docs, "gateway") if d["kind"] == "ServiceMonitor"]
    if not enabled:
        assert monitors == []
        return
    [monitor] = monitors
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # honorLabels: the gateway's namespace and inferfleet_io_service labels name the service.
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "30s",
            "scrapeTimeout": "10s",
            "honorLabels": True,
        }
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= gateway(docs, "Service")["metadata"]["labels"].items()
    assert not selector.items() <= one(docs, "Service", NS)["metadata"]["labels"].items()


def test_network_policy_admits_clients_and_scrapers_and_no_egress_rule_unless_restricted() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    apps = {"namespaceSelector": {"matchLabels": {"team": "apps"}}}
    docs = render(
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
        "networkPolicy.gatewayFrom[0].namespaceSelector.matchLabels.team=apps",
    )
    policy = gateway(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == gateway(docs, "Deployment")["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}], "from": [apps]},
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [monitoring]},
    ]
    # The operator's policy still admits only its metrics port.
    assert one(docs, "NetworkPolicy", NS)["spec"]["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [monitoring]}
    ]


@pytest.mark.parametrize("watched", [(), ("team-a", "team-b")], ids=["cluster-wide", "namespaced"])
def test_restricted_egress_adds_the_engine_pods_of_the_served_namespaces(watched: tuple[str, ...]) -> None:
    dns = {"ports": [{"port": 53, "protocol": "UDP"}]}
    docs = render(
        "networkPolicy.enabled=true",
        "networkPolicy.egress[0].ports[0].port=53",
        "networkPolicy.egress[0].ports[0].protocol=UDP",
        "networkPolicy.enginePorts={8000}",
        *([f"watchNamespaces={{{','.join(watched)}}}"] if watched else []),
    )
    policy = gateway(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [user_rule, engines] = policy["spec"]["egress"]
    assert user_rule == dns  # DNS and the API server are the user's rules, as for the operator
    assert engines["ports"] == [{"port": 8000, "protocol": "TCP"}]
    [peer] = engines["to"]
    # The selector picks the pods the operator creates for any service and engine kind.
    for engine in ("vllm", "sglang"):
        assert peer["podSelector"]["matchLabels"].items() <= child_labels("svc", engine).items()
    if watched:
        assert peer["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(watched)}
            ]
        }
    else:
        assert peer["namespaceSelector"] == {}
    # Without enginePorts, any port of an engine pod (each service picks its spec.engine.port).
    [_, any_port] = gateway(
        render("networkPolicy.enabled=true", "networkPolicy.egress[0].ports[0].port=53"), "NetworkPolicy"
    )["spec"]["egress"]
    assert "ports" not in any_port


def rendered_notes(tmp_path: Path, *sets: str) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` does not render NOTES, so a copy of
    the chart renders the same text into an object."""
    chart = tmp_path / f"chart-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "notes.yaml").write_text(
        'kind: Notes\ntext: {{ include "test.notes" . | toJson }}\n'
    )
    flags = [f for s in sets for f in ("--set", s)]
    result = helm("template", RELEASE, str(chart), "-n", NS, "--kube-version", BINARIES.kube_version,
                  "--show-only", "templates/notes.yaml", *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr
    text: str = yaml.safe_load(result.stdout)["text"]
    return text


def test_notes_tell_the_gateway_url_and_how_to_call_a_service(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)
    assert f"{GATEWAY_URL}/namespaces/<namespace>/services/<name>/v1" in notes
    assert f"port-forward svc/{GATEWAY} 8000:80" in notes
    assert "localhost:8000/namespaces/<namespace>/services/<name>/v1/chat/completions" in notes
    assert "gateway" not in rendered_notes(tmp_path, "gateway.enabled=false").lower()


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        ("gateway.replicas=0", "at '/gateway/replicas': minimum: got 0, want 1"),
        ("gateway.maxAttempts=0", "at '/gateway/maxAttempts': minimum: got 0, want 1"),
        ("gateway.maxAttempts=11", "at '/gateway/maxAttempts': maximum: got 11, want 10"),
        ("gateway.workers=0", "at '/gateway/workers': minimum: got 0, want 1"),
        ("gateway.prefixLoadSlack=-1", "at '/gateway/prefixLoadSlack': minimum: got -1, want 0"),
        # --set passes a fraction as a string: both forms are bounded.
        ("gateway.retryBudget=1.5", "at '/gateway/retryBudget': '1.5' does not match pattern"),
        ("gateway.retryBudget=-0.1", "at '/gateway/retryBudget': '-0.1' does not match pattern"),
        ("gateway.metricsPort=8080", "at '/gateway/metricsPort'"),  # the API port
        ("gateway.service.port=70000", "at '/gateway/service/port': maximum"),
        ("gateway.service.type=ExternalName", "at '/gateway/service/type': value must be one of"),
        ("gateway.terminationGracePeriodSeconds=0", "at '/gateway/terminationGracePeriodSeconds': minimum"),
        ("networkPolicy.enginePorts={0}", "at '/networkPolicy/enginePorts/0': minimum"),
        ("gateway.maxRetries=2", "at '/gateway': additional properties 'maxRetries' not allowed"),
    ],
)
def test_schema_rejects_wrong_gateway_values(flag: str, complaint: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--kube-version", BINARIES.kube_version, "--set", flag)
    assert result.returncode == 1
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_schema_bounds_a_numeric_retry_budget_and_set_passes_a_valid_one_as_text() -> None:
    result = helm("template", RELEASE, str(CHART), "--kube-version", BINARIES.kube_version,
                  "--set-json", "gateway.retryBudget=1.5")  # fmt: skip
    assert result.returncode == 1
    assert "at '/gateway/retryBudget': maximum: got 1.5, want 1" in result.stderr
    assert "--retry-budget=0.05" in gateway_container(render("gateway.retryBudget=0.05"))["args"]
