"""The Helm chart on the real cluster: install under the `restricted` Pod Security profile, RBAC that
suffices (the operator runs with the chart's ServiceAccount token) and no more, upgrade, uninstall;
the gateway's Deployment, Service, budget and RBAC, and `inferfleet gateway` under its own identity.

The operator runs as a local process: the in-cluster pods are KWOK's (admitted, scheduled and
Running, but no container runs), so the process stands in for them, authenticated with a token
of the chart's ServiceAccount. Neither Python client honours a kubeconfig's `as:` impersonation,
so a TokenRequest token is used: it is the ServiceAccount's own identity, not an approximation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from inferfleet.kube.apply import scale_inference_service
from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.ports import free_ports
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster, print_log_tail
from tests.integration.test_reconcile import create, example, small_service, wait_ready
from tests.rbac import rbac_denials
from tests.support import restricted_namespace, token_kubeconfig, wait_for_idle_h100

CHART = Path(__file__).parents[2] / "charts" / "inferfleet"
BINARIES = locate_binaries()


@dataclass
class Release:
    name: str
    namespace: str
    cluster: Cluster
    install_output: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-inferfleet"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    @property
    def gateway(self) -> str:
        """The gateway's Deployment, Service, PDB, ServiceAccount and roles."""
        return f"{self.fullname}-gateway"

    @property
    def gateway_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.gateway}"


def run(cluster: Cluster, tool: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool), "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{tool.name} {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def helm(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(cluster, BINARIES.helm, *args, check=check)


def install(cluster: Cluster, namespace: str, *sets: str) -> Release:
    name = f"if-{uuid.uuid4().hex[:6]}"  # cluster-scoped RBAC objects are named after the release
    flags = [f for s in sets for f in ("--set", s)]
    result = helm(cluster, "install", name, str(CHART), "-n", namespace, "--wait", "--timeout", "2m", *flags)
    # The namespaces also carry the `warn` label: the API server would warn about any workload
    # whose pod template breaks the profile, and helm prints such warnings on stderr.
    assert "PodSecurity" not in result.stderr, result.stderr
    return Release(name, namespace, cluster, result.stdout)


def uninstall(release: Release) -> None:
    helm(release.cluster, "uninstall", release.name, "-n", release.namespace, "--wait", check=False)


def service_account_kubeconfig(release: Release, path: Path) -> Path:
    """The cluster's kubeconfig with the chart ServiceAccount's token as the only credential."""
    return token_kubeconfig(
        release.cluster.core, release.cluster.kubeconfig, release.fullname, release.namespace, path
    )


def can_i(
    release: Release, verb: str, resource: str, namespace: str | None = None, user: str | None = None
) -> bool:
    """`kubectl auth can-i` as the chart's (operator's) ServiceAccount, or `user`; resource may
    carry `/subresource`."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", user or release.user]
    args += ["--subresource", sub] if sub else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return run(release.cluster, BINARIES.kubectl, *args, check=False).returncode == 0


def operator_log_denials(op: OperatorProcess) -> list[str]:
    return rbac_denials(op.log_text())


def exists(read_call: Any, *args: str) -> bool:
    try:
        read_call(*args)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart with default values (cluster-wide) in a namespace enforcing `restricted`."""
    namespace = restricted_namespace(cluster.core, "inferfleet-system")
    rel = install(cluster, namespace)
    yield rel
    uninstall(rel)
    cluster.core.delete_namespace(namespace)


def test_install_in_a_restricted_namespace_runs_the_operator_pod(cluster: Cluster, release: Release) -> None:
    # The namespace does enforce `restricted`: a privileged pod is refused there ...
    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="c", image="busybox", security_context=client.V1SecurityContext(privileged=True)
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(release.namespace, privileged, dry_run="All")
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body

    # ... and the chart's operator pod was admitted, scheduled and is Running and Ready.
    [pod] = cluster.core.list_namespaced_pod(
        release.namespace,
        label_selector=f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator",
    ).items
    assert pod.status.phase == "Running"
    assert all(c.ready for c in pod.status.container_statuses)
    assert pod.spec.service_account_name == release.fullname
    assert (
        cluster.apps.read_namespaced_deployment(release.fullname, release.namespace).status.ready_replicas
        == 1
    )

    for crd in ("inferenceservices.inferfleet.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert cluster.ext.read_custom_resource_definition(crd)
    assert "It manages InferenceServices in every namespace." in release.install_output


def test_the_operator_as_the_service_account_reconciles_the_examples(
    cluster: Cluster, release: Release, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(release, tmp_path / "sa-kubeconfig.yaml")
    wait_for_idle_h100(cluster.core, cluster.apps)  # the 405B needs two idle H100 nodes of one rack
    # Cluster-wide, as the chart runs it by default (placement counts GPUs in every namespace).
    op = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "operator.log")
    op.start()
    try:
        create(cluster, namespace, example("llama-3.1-8b-vllm.yaml"))
        create(cluster, namespace, example("llama-3.1-405b-vllm.yaml"))
        assert wait_ready(cluster, namespace, "llama-3-1-8b")["status"]["readyReplicas"] == 1
        big = wait_ready(cluster, namespace, "llama-3-1-405b", timeout=120)
        assert big["status"]["shardPlan"]["layout"] == "8x2"

        # The autoscaler's write (the scale subresource), made with the ServiceAccount's identity.
        sa_api = config.new_client_from_config(config_file=str(kubeconfig))
        scale_inference_service(sa_api, namespace, "llama-3-1-8b", 2)
        assert wait_ready(cluster, namespace, "llama-3-1-8b")["status"]["readyReplicas"] == 2

        # A lost group member makes the operator delete and recreate the group (delete verbs).
        group = cluster.apps.read_namespaced_stateful_set("llama-3-1-405b-g0", namespace)
        cluster.core.delete_namespaced_pod("llama-3-1-405b-g0-1", namespace)

        def recreated() -> bool:
            try:
                sts = cluster.apps.read_namespaced_stateful_set("llama-3-1-405b-g0", namespace)
            except ApiException as e:
                if e.status == 404:
                    return False
                raise
            return bool(sts.metadata.uid != group.metadata.uid)

        wait_for(recreated, timeout=60, what="the replica group to be recreated")
        wait_ready(cluster, namespace, "llama-3-1-405b", timeout=120)
        events = cluster.core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=InferenceService,reason=AllReplicasReady"
        ).items
        assert events, "the operator posts Events"
    except Exception:
        print_log_tail(op)
        raise
    finally:
        op.stop()
    assert operator_log_denials(op) == []


# (verb, resource, namespace or None for all namespaces); `svc` stands for a namespace with services.
ALLOWED = [
    ("list", "pods", None),
    ("watch", "nodes", None),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("patch", "inferenceservices.inferfleet.io", "svc"),
    ("patch", "inferenceservices.inferfleet.io/status", "svc"),
    ("patch", "inferenceservices.inferfleet.io/scale", "svc"),
    ("patch", "deployments.apps", "svc"),
    ("delete", "statefulsets.apps", "svc"),
    ("delete", "pods", "svc"),  # a lost node's single-pod replicas
    ("create", "events", "svc"),
    ("list", "events", "svc"),
]
DENIED_ACCESS = [
    *[(verb, "secrets", ns) for verb in ("get", "list", "watch") for ns in (None, "svc", "kube-system")],
    ("get", "configmaps", "svc"),
    ("create", "pods", "svc"),
    ("create", "pods/exec", "svc"),
    ("delete", "nodes", None),
    ("patch", "nodes", None),
    ("delete", "deployments.apps", "svc"),
    ("create", "jobs.batch", "svc"),
    ("create", "daemonsets.apps", "svc"),
    ("create", "inferenceservices.inferfleet.io", "svc"),
    ("delete", "inferenceservices.inferfleet.io", "svc"),
    ("create", "serviceaccounts/token", "svc"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "svc"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "namespaces", None),
    ("patch", "clusterkopfpeerings.kopf.dev", None),  # only with ha.enabled
]


def test_the_service_account_has_what_it_uses_and_no_secrets_or_unmanaged_kinds(
    release: Release, namespace: str
) -> None:
    def check(verb: str, resource: str, ns: str | None) -> bool:
        return can_i(release, verb, resource, namespace if ns == "svc" else ns)

    assert [a for a in ALLOWED if not check(*a)] == []
    assert [d for d in DENIED_ACCESS if check(*d)] == []


def test_install_runs_the_gateway_replicas_behind_their_service_with_a_budget(
    cluster: Cluster, release: Release
) -> None:
    # Both replicas admitted under `restricted` (install() saw no PodSecurity warning), Ready.
    gateway = cluster.apps.read_namespaced_deployment(release.gateway, release.namespace)
    assert (gateway.spec.replicas, gateway.status.ready_replicas) == (2, 2)
    pods = cluster.core.list_namespaced_pod(
        release.namespace,
        label_selector=",".join(f"{k}={v}" for k, v in gateway.spec.selector.match_labels.items()),
    ).items
    assert [p.spec.service_account_name for p in pods] == [release.gateway] * 2

    # The Service selects exactly those pods: the EndpointSlice controller lists both, ready.
    discovery = client.DiscoveryV1Api(cluster.api_client)

    def ready_endpoints() -> set[str] | None:
        slices = discovery.list_namespaced_endpoint_slice(
            release.namespace, label_selector=f"kubernetes.io/service-name={release.gateway}"
        ).items
        ready = {a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses}
        return ready if ready == {p.status.pod_ip for p in pods} else None

    wait_for(ready_endpoints, timeout=30, what="the gateway Service's endpoints to be its two pods")
    service = cluster.core.read_namespaced_service(release.gateway, release.namespace)
    assert {(p.name, p.port) for p in service.spec.ports} == {("http", 80), ("metrics", 8081)}

    budget = client.PolicyV1Api(cluster.api_client).read_namespaced_pod_disruption_budget(
        release.gateway, release.namespace
    )
    assert budget.spec.min_available == 1

    # The operator names the gateway in status.endpoint, and the notes tell the user its URL.
    url = f"http://{release.gateway}.{release.namespace}.svc:80"
    operator = cluster.apps.read_namespaced_deployment(release.fullname, release.namespace)
    assert f"--gateway-url={url}" in operator.spec.template.spec.containers[0].args
    assert f"{url}/namespaces/<namespace>/services/<name>/v1" in release.install_output


# The gateway's ServiceAccount: reads InferenceServices and EndpointSlices, writes only the scale
# subresource (scale from zero); nothing of the operator's.
GATEWAY_ALLOWED = [
    *[(verb, "inferenceservices.inferfleet.io", ns) for verb in ("list", "watch") for ns in (None, "svc")],
    ("patch", "inferenceservices.inferfleet.io/scale", "svc"),
    *[(verb, "endpointslices.discovery.k8s.io", ns) for verb in ("list", "watch") for ns in (None, "svc")],
]
GATEWAY_DENIED = [
    ("patch", "inferenceservices.inferfleet.io", "svc"),
    ("create", "inferenceservices.inferfleet.io", "svc"),
    ("delete", "inferenceservices.inferfleet.io", "svc"),
    ("patch", "inferenceservices.inferfleet.io/status", "svc"),
    ("update", "inferenceservices.inferfleet.io/scale", "svc"),
    ("get", "inferenceservices.inferfleet.io/scale", "svc"),
    ("patch", "endpointslices.discovery.k8s.io", "svc"),
    ("list", "endpoints", "svc"),
    ("list", "pods", "svc"),
    ("get", "secrets", "svc"),
    ("list", "secrets", None),
    ("get", "configmaps", "svc"),
    ("patch", "deployments.apps", "svc"),
    ("create", "events", "svc"),
    ("list", "nodes", None),
    ("create", "serviceaccounts/token", "svc"),
]


def test_the_gateway_service_account_reads_services_and_slices_and_writes_only_scale(
    release: Release, namespace: str
) -> None:
    def check(verb: str, resource: str, ns: str | None) -> bool:
        return can_i(release, verb, resource, namespace if ns == "svc" else ns, user=release.gateway_user)

    assert [a for a in GATEWAY_ALLOWED if not check(*a)] == []
    assert [d for d in GATEWAY_DENIED if check(*d)] == []


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except OSError:  # not listening yet, or an HTTP error status
        return 0, b""


def test_the_gateway_process_under_its_service_account_syncs_and_lists_the_models(
    cluster: Cluster, release: Release, namespace: str, tmp_path: Path
) -> None:
    """The chart's gateway identity suffices: the process's caches sync (/readyz) and it serves the
    InferenceServices it discovered, with no RBAC refusal in its log. It runs as a local process, as
    the operator does in these tests (KWOK's pods run no container)."""
    body = small_service("via-gateway")
    create(cluster, namespace, body)
    kubeconfig = token_kubeconfig(
        cluster.core, cluster.kubeconfig, release.gateway, release.namespace, tmp_path / "gateway-sa.yaml"
    )
    port, metrics = free_ports(2)
    log_path = tmp_path / "gateway.log"
    address = [
        "--host=127.0.0.1",
        f"--port={port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics}",
    ]
    args = [sys.executable, "-m", "inferfleet", "gateway", *address]
    env = os.environ | {"KUBECONFIG": str(kubeconfig)}
    with log_path.open("w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200 or process.poll() is not None,
            timeout=60,
            what="the gateway's caches to sync (/readyz)",
        )
        assert process.poll() is None, log_path.read_text()[-3000:]
        status, listed = http_get(f"http://127.0.0.1:{port}/namespaces/{namespace}/v1/models")
        assert status == 200
        assert [(m["id"], m["owned_by"]) for m in json.loads(listed)["data"]] == [
            (body["spec"]["model"]["name"], f"{namespace}/via-gateway")
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert rbac_denials(log_path.read_text()) == []


def test_watched_namespaces_mode_reconciles_with_roles_in_those_namespaces_only(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    home = restricted_namespace(cluster.core, "inferfleet-scoped")
    rel = install(cluster, home, f"watchNamespaces={{{namespace}}}")
    try:
        assert f"It manages InferenceServices in: {namespace}." in rel.install_output
        op = OperatorProcess(
            kubeconfig=service_account_kubeconfig(rel, tmp_path / "sa-kubeconfig.yaml"),
            log_path=tmp_path / "operator.log",
            namespaces=[namespace],
        )
        op.start()
        try:
            create(cluster, namespace, small_service("scoped"))
            wait_ready(cluster, namespace, "scoped")
        except Exception:
            print_log_tail(op)
            raise
        finally:
            op.stop()
        assert operator_log_denials(op) == []

        assert can_i(rel, "patch", "deployments.apps", namespace)
        assert can_i(rel, "watch", "nodes")
        assert can_i(rel, "watch", "namespaces")
        # kopf watches a namespaced resource only in the namespaces it serves: pods too.
        assert can_i(rel, "list", "pods", namespace)
        assert can_i(rel, "delete", "pods", namespace)
        for verb, resource in [
            ("patch", "deployments.apps"),
            ("list", "inferenceservices.inferfleet.io"),
            ("list", "pods"),
            ("delete", "pods"),
        ]:
            assert not can_i(rel, verb, resource, "default")
            assert not can_i(rel, verb, resource)
        # The gateway serves the same namespaces, through a Role there, and nothing elsewhere.
        gateway_args = (
            cluster.apps.read_namespaced_deployment(rel.gateway, home).spec.template.spec.containers[0].args
        )
        assert [a for a in gateway_args if a.startswith("--namespace")] == [f"--namespace={namespace}"]
        for verb, resource in [
            ("watch", "inferenceservices.inferfleet.io"),
            ("patch", "inferenceservices.inferfleet.io/scale"),
            ("list", "endpointslices.discovery.k8s.io"),
        ]:
            assert can_i(rel, verb, resource, namespace, user=rel.gateway_user)
            assert not can_i(rel, verb, resource, "default", user=rel.gateway_user)
            assert not can_i(rel, verb, resource, user=rel.gateway_user)
    finally:
        uninstall(rel)
        cluster.core.delete_namespace(home)
    assert not exists(
        client.RbacAuthorizationV1Api(cluster.api_client).read_namespaced_role, rel.fullname, namespace
    )


def test_upgrade_to_ha_elects_one_active_operator_hands_over_and_uninstall_is_clean(
    cluster: Cluster, release: Release, namespace: str, tmp_path: Path
) -> None:
    helm(cluster, "upgrade", release.name, str(CHART), "-n", release.namespace, "--set", "ha.enabled=true",
         "--wait", "--timeout", "2m")  # fmt: skip
    history = yaml.safe_load(
        helm(cluster, "history", release.name, "-n", release.namespace, "-o", "yaml").stdout
    )
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    sts = cluster.apps.read_namespaced_stateful_set(release.fullname, release.namespace)
    assert sts.status.ready_replicas == 2  # both pods admitted under `restricted`
    wait_for(
        lambda: not exists(cluster.apps.read_namespaced_deployment, release.fullname, release.namespace),
        timeout=30,
        what="the standalone Deployment to be gone",
    )
    policy = client.PolicyV1Api(cluster.api_client)
    assert (
        policy.read_namespaced_pod_disruption_budget(release.fullname, release.namespace).spec.min_available
        == 1
    )
    assert cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release.fullname)

    # Two replicas with the chart's peering and RBAC: the higher priority works, the other waits.
    kubeconfig = service_account_kubeconfig(release, tmp_path / "sa-kubeconfig.yaml")
    ops = [
        OperatorProcess(
            kubeconfig=kubeconfig,
            log_path=tmp_path / f"operator-{priority}.log",
            extra_args=["--peering", release.fullname, "--priority", str(priority)],
        )
        for priority in (0, 1)
    ]
    try:
        for op in ops:
            op.start()
        wait_for(lambda: "Pausing operations in favour of" in ops[0].log_text(), timeout=60, what="a standby")
        assert "Pausing operations" not in ops[1].log_text()

        # The active one crashes (no clean-up of its peering record): the standby takes over in 30 s.
        ops[1].kill()
        killed = time.monotonic()
        create(cluster, namespace, small_service("handover"))
        wait_ready(cluster, namespace, "handover", timeout=30)
        print(
            f"handover: the standby reconciled a new service {time.monotonic() - killed:.1f}s after kill -9"
        )
        assert "Resuming operations" in ops[0].log_text()
    except Exception:
        for op in ops:
            print_log_tail(op)
        raise
    finally:
        for op in ops:
            op.stop()
    assert [line for op in ops for line in operator_log_denials(op)] == []

    helm(cluster, "uninstall", release.name, "-n", release.namespace, "--wait")
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    for name in (release.fullname, release.gateway):
        assert not exists(rbac.read_cluster_role, name)
        assert not exists(rbac.read_cluster_role_binding, name)
    assert not exists(cluster.apps.read_namespaced_deployment, release.gateway, release.namespace)
    assert not exists(cluster.core.read_namespaced_service, release.gateway, release.namespace)
    assert not exists(cluster.core.read_namespaced_service_account, release.gateway, release.namespace)
    assert not exists(policy.read_namespaced_pod_disruption_budget, release.gateway, release.namespace)
    assert not exists(cluster.core.read_namespaced_service_account, release.fullname, release.namespace)
    assert not exists(cluster.apps.read_namespaced_stateful_set, release.fullname, release.namespace)
    assert not exists(policy.read_namespaced_pod_disruption_budget, release.fullname, release.namespace)
    assert not exists(
        cluster.custom.get_cluster_custom_object, "kopf.dev", "v1", "clusterkopfpeerings", release.fullname
    )
    assert not can_i(release, "list", "pods")
    # Helm never deletes CRDs (that would delete every InferenceService): they stay.
    for crd in ("inferenceservices.inferfleet.io", "clusterkopfpeerings.kopf.dev"):
        assert cluster.ext.read_custom_resource_definition(crd)
