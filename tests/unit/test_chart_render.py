"""The Helm chart: lint, render for the main value combinations, and the schema's refusals.

Needs only the helm binary of the local cluster's build (`make setup`); no cluster.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kube_client

import inferfleet.api
from inferfleet.cli import build_config, build_parser
from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.planning.inference_pool import EndpointPicker

CHART = Path(__file__).parents[2] / "charts" / "inferfleet"
BINARIES = locate_binaries()
HELM = BINARIES.helm
RELEASE, NS = "fleet", "inferfleet-system"
FULLNAME = "fleet-inferfleet"
SA = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NS}

pytestmark = pytest.mark.skipif(
    not HELM.is_file(), reason=f"helm is not built at {HELM}; run `make setup` (hack/build-binaries.sh)"
)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True)


def render(*sets: str) -> list[dict[str, Any]]:
    """`helm template` with --set flags, as a list of objects."""
    flags = [f for s in sets for f in ("--set", s)]
    # Our helm is built without the ldflags that set its default Kubernetes version (v1.20).
    result = helm("template", RELEASE, str(CHART), "-n", NS, "--kube-version", BINARIES.kube_version, *flags)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The objects of one component of the chart: the operator's or the gateway's."""
    label = "app.kubernetes.io/component"
    return [d for d in docs if d["metadata"].get("labels", {}).get(label, component) == component]


def kinds(docs: list[dict[str, Any]], component: str = "operator") -> list[str]:
    return sorted(d["kind"] for d in of(docs, component))


def one(
    docs: list[dict[str, Any]], kind: str, namespace: str | None = None, component: str = "operator"
) -> dict[str, Any]:
    [doc] = [
        d
        for d in of(docs, component)
        if d["kind"] == kind and d["metadata"].get("namespace", namespace) == namespace
    ]
    return doc


def container(
    docs: list[dict[str, Any]], kind: str = "Deployment", component: str = "operator"
) -> dict[str, Any]:
    [c] = one(docs, kind, NS, component)["spec"]["template"]["spec"]["containers"]
    return c


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples, resource suffixed with @name when resourceNames limit it."""
    out = set()
    for rule in rules:
        names = rule.get("resourceNames")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out |= {(group, f"{resource}@{n}" if names else resource, verb) for n in names or [""]}
    return out


NAMESPACED = {
    ("inferfleet.io", "inferenceservices", "list"),
    ("inferfleet.io", "inferenceservices", "watch"),
    ("inferfleet.io", "inferenceservices", "patch"),
    ("inferfleet.io", "inferenceservices/status", "patch"),
    ("inferfleet.io", "inferenceservices/scale", "patch"),
    ("inferfleet.io", "inferenceservices/finalizers", "update"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "patch"),
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "patch"),
    ("apps", "statefulsets", "delete"),
    ("", "services", "get"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("", "services", "delete"),
    ("policy", "poddisruptionbudgets", "get"),
    ("policy", "poddisruptionbudgets", "create"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "patch"),
    ("", "pods", "delete"),
    ("", "events", "create"),
    ("", "events", "list"),
    # The node weights cache's claims and Jobs, watched by label whether or not the cache is on.
    ("", "persistentvolumeclaims", "list"),
    ("", "persistentvolumeclaims", "watch"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    # Node autoscaling: a waiting group's ProvisioningRequest and the PodTemplate it references.
    ("autoscaling.x-k8s.io", "provisioningrequests", "list"),
    ("autoscaling.x-k8s.io", "provisioningrequests", "watch"),
    ("autoscaling.x-k8s.io", "provisioningrequests", "create"),
    ("autoscaling.x-k8s.io", "provisioningrequests", "delete"),
    ("", "podtemplates", "get"),
    ("", "podtemplates", "create"),
    ("", "podtemplates", "delete"),
    # A service's InferencePool (inferencePools.enabled, the default), applied as a child.
    ("inference.networking.k8s.io", "inferencepools", "get"),
    ("inference.networking.k8s.io", "inferencepools", "create"),
    ("inference.networking.k8s.io", "inferencepools", "patch"),
}
CLUSTER_READS = {
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    # The node weights cache's volumes, watched by label whether or not the cache is on.
    ("", "persistentvolumes", "list"),
    ("", "persistentvolumes", "watch"),
}


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (
            "watchNamespaces={a,b}",
            "ha.enabled=true",
            "serviceMonitor.enabled=true",
            "networkPolicy.enabled=true",
            "grafana.dashboard.enabled=true",
        ),
    ],
    ids=["defaults", "everything-on"],
)
def test_helm_lint_strict_passes(sets: tuple[str, ...]) -> None:
    flags = [f for s in sets for f in ("--set", s)]
    result = helm("lint", "--strict", str(CHART), "--kube-version", BINARIES.kube_version, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_defaults_run_one_standalone_cluster_wide_operator() -> None:
    docs = render()
    assert kinds(docs) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    deployment = one(docs, "Deployment", NS)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two standalone operators
    c = container(docs)
    assert c["image"] == "ghcr.io/inferfleet/inferfleet:0.1.0.dev0"
    assert c["args"] == [
        "run",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=8081",
        "--metrics-address=0.0.0.0",
        "--kube-qps=50",
        "--kube-burst=100",
        "--kube-concurrency=8",
        "--workers=8",
        "--prometheus-timeout=10",
        "--prometheus-max-series=10000",
        "--max-replicas-per-service=64",
        "--allowed-capabilities=",
        "--allowed-priority-classes=",
        "--gpu-resource-names=nvidia.com/gpu,amd.com/gpu",
        # each InferencePool names the picker `<service>-epp:9002` (tests/integration/test_inference_pool.py)
        "--endpoint-picker-service={service}-epp",
        "--endpoint-picker-port=9002",
        "--endpoint-picker-failure-mode=FailClose",
        # status.endpoint names the gateway (tests/unit/test_chart_gateway.py)
        "--gateway-url=http://fleet-inferfleet-gateway.inferfleet-system.svc:80",
        "--log-json",
    ]
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 8081}
    assert "INFERFLEET_PROMETHEUS_URL" not in {e["name"] for e in c["env"]}

    role = one(docs, "ClusterRole")
    assert grants(role["rules"]) == CLUSTER_READS | NAMESPACED
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [SA]
    assert one(docs, "Deployment", NS)["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME

    service = one(docs, "Service", NS)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_pod_meets_the_restricted_pod_security_profile() -> None:
    pod = one(render(), "Deployment", NS)["spec"]["template"]["spec"]
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
    # The root filesystem is read-only: /tmp is the one writable place.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)


def test_watched_namespaces_get_roles_and_the_cluster_role_only_reads() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    assert [a for a in container(docs)["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert grants(one(docs, "ClusterRole")["rules"]) == CLUSTER_READS | {
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    for ns in ("team-a", "team-b"):
        assert grants(one(docs, "Role", ns)["rules"]) == NAMESPACED
        binding = one(docs, "RoleBinding", ns)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FULLNAME,
        }
        assert binding["subjects"] == [SA]
    assert [d for d in of(docs, "operator") if d["kind"] == "Role"] == [
        one(docs, "Role", "team-a"),
        one(docs, "Role", "team-b"),
    ]


def test_ha_runs_peering_replicas_with_distinct_priorities_and_a_budget() -> None:
    docs = render("ha.enabled=true")
    assert "Deployment" not in kinds(docs)
    sts = one(docs, "StatefulSet", NS)
    assert sts["spec"]["replicas"] == 2
    c = container(docs, "StatefulSet")
    assert c["args"][-3:] == [f"--peering={FULLNAME}", "--priority=$(POD_INDEX)", "--log-json"]
    [index] = [e for e in c["env"] if e["name"] == "POD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"

    pdb = one(docs, "PodDisruptionBudget", NS)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == FULLNAME
    assert grants(one(docs, "ClusterRole")["rules"]) - CLUSTER_READS - NAMESPACED == {
        ("kopf.dev", "clusterkopfpeerings", "list"),
        ("kopf.dev", "clusterkopfpeerings", "watch"),
        ("kopf.dev", f"clusterkopfpeerings@{FULLNAME}", "get"),
        ("kopf.dev", f"clusterkopfpeerings@{FULLNAME}", "patch"),
    }


def test_ha_with_watched_namespaces_peers_in_each_namespace() -> None:
    docs = render("ha.enabled=true", "ha.replicas=3", "ha.peeringName=fleet", "watchNamespaces={a,b}")
    assert one(docs, "StatefulSet", NS)["spec"]["replicas"] == 3
    assert {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "KopfPeering"
    } == {
        ("a", "fleet"),
        ("b", "fleet"),
    }
    assert "ClusterKopfPeering" not in kinds(docs)
    assert grants(one(docs, "Role", "a")["rules"]) - NAMESPACED == {
        ("kopf.dev", "kopfpeerings", "list"),
        ("kopf.dev", "kopfpeerings", "watch"),
        ("kopf.dev", "kopfpeerings@fleet", "get"),
        ("kopf.dev", "kopfpeerings@fleet", "patch"),
    }


@pytest.mark.parametrize("enabled", [True, False])
def test_service_monitor_is_rendered_only_when_enabled(enabled: bool) -> None:
    docs = render(f"serviceMonitor.enabled={str(enabled).lower()}", "serviceMonitor.labels.release=kps")
    monitors = [d for d in of(docs, "operator") if d["kind"] == "ServiceMonitor"]
    if not enabled:
        assert monitors == []
        return
    [monitor] = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    service = one(docs, "Service", NS)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_custom_resources_image_and_prometheus_url_reach_the_pod() -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(
        "resources.requests.cpu=500m",
        "resources.requests.memory=1Gi",
        "resources.limits.memory=2Gi",
        "resources.limits.cpu=2",
        f"image.digest={digest}",
        "prometheus.url=http://prometheus.monitoring.svc:9090",
    )
    c = container(docs)
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": 2, "memory": "2Gi"},
    }
    assert c["image"] == f"ghcr.io/inferfleet/inferfleet@{digest}"
    assert {"name": "INFERFLEET_PROMETHEUS_URL", "value": "http://prometheus.monitoring.svc:9090"} in c["env"]


def test_client_limits_and_the_scheduler_profile_reach_the_operator() -> None:
    args = container(
        render("kubeClient.qps=5", "kubeClient.concurrency=2", "schedulerName=inferfleet-binpack")
    )["args"]
    assert "--kube-qps=5" in args
    assert "--kube-concurrency=2" in args
    assert "--scheduler-name=inferfleet-binpack" in args


def test_network_policy_admits_only_the_metrics_port() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render(
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
    )
    policy = one(docs, "NetworkPolicy", NS)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [peer]}]
    assert policy["spec"]["podSelector"] == one(docs, "Deployment", NS)["spec"]["selector"]


Grant = tuple[str, str, str]
OPERATOR = Path(__file__).parents[2] / "operator" / "inferfleet"
RUNTIME = ("handlers", "kube", "metrics")
"""The packages `inferfleet run` calls the API from (localcluster, sim and demo are dev tooling)."""


def applied(group: str, resource: str) -> set[Grant]:
    """Server-side apply is a patch that creates the object when it does not exist yet."""
    return {(group, resource, "patch"), (group, resource, "create")}


CHILDREN = [
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("", "services"),
    ("policy", "poddisruptionbudgets"),
    ("inference.networking.k8s.io", "inferencepools"),
]

# Each Kubernetes API call of the operator and the grants it needs. The source is searched for
# every client method it names and for each verb kube/apply.py's `_verb(api, kind, verb)` builds a
# child's method from: a new call fails the test below until it is listed here.
CLIENT_CALLS: dict[str, set[Grant]] = {
    # Children: server-side apply (a patch, which creates when absent: patch and create); a child
    # not known yet is applied create-only (a resourceVersion no object has) and read back when its
    # name is taken (NameConflict, no takeover).
    "_verb(patch)": {(g, r, "patch") for g, r in CHILDREN} | {(g, r, "create") for g, r in CHILDREN},
    "_verb(read)": {(g, r, "get") for g, r in CHILDREN},
    # Its only caller is delete_group: a broken group's StatefulSet and headless Service.
    "_verb(delete)": {("apps", "statefulsets", "delete"), ("", "services", "delete")},
    "delete_namespaced_pod": {("", "pods", "delete")},  # a lost node's single-pod replicas
    "patch_namespaced_pod": {("", "pods", "patch")},  # deletion cost before a scale-down
    "patch_namespaced_custom_object_status": {("inferfleet.io", "inferenceservices/status", "patch")},
    "patch_namespaced_custom_object_scale": {("inferfleet.io", "inferenceservices/scale", "patch")},
    "create_namespaced_event": {("", "events", "create")},
    "list_namespaced_event": {("", "events", "list")},  # a group's FailedCreate reason
    # The autoscaler reads the peering record: only the active instance scales.
    "get_cluster_custom_object": {("kopf.dev", f"clusterkopfpeerings@{FULLNAME}", "get")},
    "get_namespaced_custom_object": {("kopf.dev", f"kopfpeerings@{FULLNAME}", "get")},
    # InferencePools are a custom resource: kube/apply.py's _InferencePools names these client
    # methods for `_verb(patch)` and `_verb(read)`, whose grants CHILDREN lists (it also reads a
    # pool with get_namespaced_custom_object, above).
    "patch_namespaced_custom_object": set(),
    # The node weights cache (modelCache.root only): a namespace's claim (read back when it
    # exists), its `local` volume, and the Jobs that make its directories and fetch the models.
    "create_namespaced_persistent_volume_claim": {("", "persistentvolumeclaims", "create")},
    "read_namespaced_persistent_volume_claim": {("", "persistentvolumeclaims", "get")},
    "create_persistent_volume": {("", "persistentvolumes", "create")},
    # A cache volume whose claim is gone (its namespace deleted), once its directories are removed.
    "delete_persistent_volume": {("", "persistentvolumes", "delete")},
    "create_namespaced_job": {("batch", "jobs", "create")},
    # A finished eviction's Jobs (the fetch's too), and the warm labels on nodes holding a model.
    "delete_namespaced_job": {("batch", "jobs", "delete")},
    "patch_node": {("", "nodes", "patch")},
    # Node autoscaling: a waiting group's ProvisioningRequest and the PodTemplate it references
    # (read back when its name is taken); discovery of the API needs no grant.
    "create_namespaced_custom_object": {("autoscaling.x-k8s.io", "provisioningrequests", "create")},
    "delete_namespaced_custom_object": {("autoscaling.x-k8s.io", "provisioningrequests", "delete")},
    "create_namespaced_pod_template": {("", "podtemplates", "create")},
    "read_namespaced_pod_template": {("", "podtemplates", "get")},
    "delete_namespaced_pod_template": {("", "podtemplates", "delete")},
    "get_api_resources": set(),
}
MODEL_CACHE_WRITES: set[Grant] = {
    ("", "persistentvolumeclaims", "create"),
    ("", "persistentvolumeclaims", "get"),
    ("", "persistentvolumes", "create"),
    ("", "persistentvolumes", "delete"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),
    ("", "nodes", "patch"),
}
"""Granted only with modelCache.root set: without it the operator never calls them."""
# kopf's own requests, besides the list and watch of each resource its decorators name.
KOPF_CALLS: dict[str, set[Grant]] = {
    "annotations (progress, last handled spec) and finalizer on the object": {
        ("inferfleet.io", "inferenceservices", "patch")
    },
    "Events it posts for handler outcomes": {("", "events", "create")},
    "resource discovery and its CRD watch": {
        ("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in ("list", "watch")
    },
    "namespaces it serves (--namespace)": {("", "namespaces", verb) for verb in ("list", "watch")},
    "its peering record (--peering), cluster-wide": {
        ("kopf.dev", "clusterkopfpeerings", "list"),
        ("kopf.dev", "clusterkopfpeerings", "watch"),
        ("kopf.dev", f"clusterkopfpeerings@{FULLNAME}", "patch"),
    },
    "its peering record (--peering), per namespace": {
        ("kopf.dev", "kopfpeerings", "list"),
        ("kopf.dev", "kopfpeerings", "watch"),
        ("kopf.dev", f"kopfpeerings@{FULLNAME}", "patch"),
    },
}
# Children's ownerReferences set blockOwnerDeletion: OwnerReferencesPermissionEnforcement admits
# that only from who may update the owner's finalizers.
ADMISSION: set[Grant] = {("inferfleet.io", "inferenceservices/finalizers", "update")}


def operator_sources() -> list[ast.Module]:
    files = [f for package in RUNTIME for f in sorted((OPERATOR / package).rglob("*.py"))]
    return [ast.parse(f.read_text(), str(f)) for f in files]


API_VERBS = ("create", "delete", "get", "list", "patch", "read", "replace", "watch", "connect")


def kube_client_methods_named(trees: Sequence[ast.AST]) -> set[str]:
    """The Kubernetes client's API methods (`patch_namespaced_service`...) these sources name."""
    methods = {
        m
        for name in dir(kube_client)
        if name.endswith("Api")
        for m in dir(getattr(kube_client, name))
        if m.split("_")[0] in API_VERBS
    }
    nodes = [node for tree in trees for node in ast.walk(tree)]
    return {node.attr for node in nodes if isinstance(node, ast.Attribute) and node.attr in methods}


def client_methods_named() -> set[str]:
    """The Kubernetes client's API methods the operator names, and `_verb(<verb>)` for each verb
    it passes to kube/apply.py's `_verb`."""
    trees = operator_sources()
    nodes = [node for tree in trees for node in ast.walk(tree)]
    named = kube_client_methods_named(trees)
    for node in nodes:
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "_verb":
            [verb] = [a.value for a in node.args if isinstance(a, ast.Constant)]
            named.add(f"_verb({verb})")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "_patcher":
            named.add("_verb(patch)")
    return named


def kopf_watched() -> set[Grant]:
    """list and watch of each resource a kopf.on.* or kopf.index decorator names."""

    def value(arg: ast.expr) -> str:
        if isinstance(arg, ast.Constant):
            return str(arg.value)
        return str(getattr(inferfleet.api, ast.unparse(arg)))  # GROUP, VERSION, PLURAL

    calls = [node for tree in operator_sources() for node in ast.walk(tree) if isinstance(node, ast.Call)]
    out = set()
    for call in calls:
        if ast.unparse(call.func).startswith(("kopf.on.", "kopf.index")) and len(call.args) >= 3:
            group, _, plural = (value(a) for a in call.args[:3])
            out |= {(group, plural, "list"), (group, plural, "watch")}
    return out


CLUSTER_SCOPED = (
    "nodes",
    "customresourcedefinitions",
    "namespaces",
    "clusterkopfpeerings",
    "persistentvolumes",
)


def needed(cluster_wide: bool, model_cache: bool = False) -> dict[str, set[Grant]]:
    """The grants each kind of role needs: a cluster-wide operator's all in its ClusterRole; a
    namespaced one's reads of cluster-scoped resources only (kopf watches the rest per namespace)."""
    out = kopf_watched() | ADMISSION
    for grants_ in [*CLIENT_CALLS.values(), *KOPF_CALLS.values()]:
        out |= grants_
    # A cluster-wide operator serves no namespace list and peers in a ClusterKopfPeering.
    unused = ("namespaces", "kopfpeerings") if cluster_wide else ("clusterkopfpeerings",)
    out = {g for g in out if g[1].split("@")[0] not in unused}
    if not model_cache:
        out -= MODEL_CACHE_WRITES
    if cluster_wide:
        return {"ClusterRole": out, "Role": set()}
    cluster = {g for g in out if g[1].split("@")[0] in CLUSTER_SCOPED}
    return {"ClusterRole": cluster, "Role": out - cluster}


def test_every_kubernetes_client_call_of_the_operator_is_in_the_table() -> None:
    assert client_methods_named() == set(CLIENT_CALLS)
    assert ("inferfleet.io", "inferenceservices", "watch") in kopf_watched()
    assert ("", "pods", "watch") in kopf_watched()


@pytest.mark.parametrize("model_cache", [False, True], ids=["no-cache", "cache"])
@pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "namespaced"])
def test_the_chart_grants_exactly_what_the_operator_calls(cluster_wide: bool, model_cache: bool) -> None:
    """A verb the operator needs and the chart lacks is `missing`; one it grants for nothing is `extra`."""
    cache = ["modelCache.root=/var/lib/inferfleet/models"] if model_cache else []
    docs = render("ha.enabled=true", *cache, *([] if cluster_wide else ["watchNamespaces={a}"]))
    for kind, want in needed(cluster_wide, model_cache).items():
        granted = set().union(*(grants(d["rules"]) for d in of(docs, "operator") if d["kind"] == kind))
        assert {"missing": want - granted, "extra": granted - want} == {"missing": set(), "extra": set()}, (
            kind
        )


def test_no_combination_grants_secrets_or_wildcards() -> None:
    for sets in [
        (),
        ("watchNamespaces={a}",),
        ("ha.enabled=true",),
        ("ha.enabled=true", "watchNamespaces={a}"),
    ]:
        for doc in render(*sets):
            if doc["kind"] in ("ClusterRole", "Role"):
                for group, resource, verb in grants(doc["rules"]):
                    assert "*" not in (group, resource, verb)
                    assert resource.split("@")[0] not in (
                        "secrets",
                        "configmaps",
                        "pods/exec",
                        "serviceaccounts/token",
                    )
                    assert verb not in ("escalate", "bind", "impersonate")


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        ("ha.replicas=two", "at '/ha/replicas': got string, want integer"),
        ("healthPort=http", "at '/healthPort': got string, want integer"),
        ("ha.replicas=1", "at '/ha/replicas': minimum: got 1, want 2"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'json', 'text'"),
        ("kubeClient.qps=0", "at '/kubeClient/qps': exclusiveMinimum"),
        ("schedulerName=Bin_Pack", "at '/schedulerName': 'Bin_Pack' does not match pattern"),
        ("watchNamespaces[0]=Team_A", "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
        (
            "inferencePools.endpointPicker.failureMode=Open",
            "at '/inferencePools/endpointPicker/failureMode': value must be one of 'FailOpen', 'FailClose'",
        ),
        # Unknown keys are refused: a typo is not silently ignored.
        ("replicaCount=2", "at '': additional properties 'replicaCount' not allowed"),
        (
            "inferencePools.endpointPicker.service=A_B",
            "at '/inferencePools/endpointPicker/service': 'A_B' does not match",
        ),
    ],
)
def test_schema_rejects_wrong_values(flag: str, complaint: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--kube-version", BINARIES.kube_version, "--set", flag)
    assert result.returncode == 1
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "namespaced"])
def test_inference_pools_off_grants_nothing_for_them_and_tells_the_operator(cluster_wide: bool) -> None:
    docs = render("inferencePools.enabled=false", *([] if cluster_wide else ["watchNamespaces={a}"]))
    assert "--inference-pools=off" in container(docs)["args"]
    granted = set().union(*(grants(d["rules"]) for d in of(docs, "operator") if "rules" in d))
    assert {g[1] for g in granted} >= {"deployments", "services"}
    assert {g for g in granted if g[1] == "inferencepools"} == set()
    assert not [a for a in container(docs)["args"] if a.startswith("--endpoint-picker")]


def test_the_endpoint_picker_reaches_the_operator_and_a_bad_one_is_refused() -> None:
    args = container(
        render("inferencePools.endpointPicker.service=shared-epp", "inferencePools.endpointPicker.port=9100")
    )["args"]
    config = build_config(build_parser().parse_args(args))
    assert (config.inference_pools, config.endpoint_picker) == (
        True,
        EndpointPicker("shared-epp", 9100, "FailClose"),
    )
    assert (
        build_config(build_parser().parse_args(container(render())["args"])).endpoint_picker
        == EndpointPicker()
    )
    with pytest.raises(SystemExit, match="must be a Service name"):
        build_config(build_parser().parse_args(["run", "--endpoint-picker-service={service}_EPP"]))


def test_the_model_cache_reaches_the_operator_only_when_a_root_is_set() -> None:
    assert not [a for a in container(render())["args"] if a.startswith("--model-cache")]
    args = container(render("modelCache.root=/var/lib/inferfleet/models"))["args"]
    assert "--model-cache-root=/var/lib/inferfleet/models" in args
    assert f"--model-cache-namespace={NS}" in args
    assert any(a.startswith("--model-cache-image=ghcr.io/inferfleet/inferfleet:") for a in args)
    assert not [a for a in args if a.startswith("--model-cache-node-budget-bytes")]  # 0: no budget
    budget = container(render("modelCache.root=/m", "modelCache.nodeBudgetBytes=500000000000"))["args"]
    assert "--model-cache-node-budget-bytes=500000000000" in budget
    cache = build_config(build_parser().parse_args(budget)).model_cache
    assert cache is not None
    assert cache.node_budget_bytes == 500_000_000_000


def test_the_release_namespace_may_run_the_cache_directory_jobs_in_namespaced_mode() -> None:
    docs = render("modelCache.root=/m", "watchNamespaces={a}")
    role = one(docs, "Role", NS)
    assert role["metadata"]["name"].endswith("-model-cache")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create"]}
    ]
