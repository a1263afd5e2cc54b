"""Shared fixtures: the real local cluster, a namespace per test, Prometheus and the operator.

Set INFERFLEET_TEST_KUBECONFIG to run the cluster tests against an existing cluster (kind,
for example) instead of starting the local one.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.gateway_process import GatewayProcess
from inferfleet.localcluster.job_pods import JobPods
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import cache_dir
from inferfleet.localcluster.prometheus import LocalPrometheus
from tests.rbac import RBAC_SETTLED_AT, ChartIdentity, rbac_denials

TESTS = Path(__file__).parent
JOBS_PREFIX = "jobs-"
"""Namespaces whose weights cache Job pods run as real processes (the `job_pods` fixture)."""
# Engines at KWOK pods' own IPs: moves the session into a private network when a test asks for them.
pytest_plugins = ["tests.podengines"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if TESTS / "unit" in path.parents or TESTS / "bench" in path.parents:
            item.add_marker(pytest.mark.unit)
        elif TESTS / "integration" in path.parents or TESTS / "e2e" in path.parents:
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


def print_log_tail(op: OperatorProcess, lines: int = 60) -> None:
    """Shown under "Captured stdout" of a failed test: what the operator was doing."""
    print(f"--- last {lines} lines of {op.log_path} ---")
    print("\n".join(op.log_text().splitlines()[-lines:]))


class Cluster:
    def __init__(self, kubeconfig: Path, local: LocalCluster | None) -> None:
        self.kubeconfig = kubeconfig
        self.local = local
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.ext = client.ApiextensionsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    given = os.environ.get("INFERFLEET_TEST_KUBECONFIG")
    if given:
        yield Cluster(Path(given), None)
        return
    from tests.podengines import PROBED_PREFIX  # a plugin: imported here, after pytest loaded it

    # Pods in the namespaces of tests with PodEngines turn Ready by their probes (tests/podengines.py).
    # And the weights cache's Job pods of namespaces named JOBS_PREFIX... run as processes (job_pods).
    local = LocalCluster(
        name=f"inferfleet-test-{os.getpid()}", probed_namespaces=PROBED_PREFIX, job_namespaces=JOBS_PREFIX
    )
    local.create()
    try:
        yield Cluster(local.kubeconfig, local)
    finally:
        local.delete()


@pytest.fixture
def job_pods(cluster: Cluster, tmp_path: Path) -> Iterator[JobPods]:
    """The kubelet's part for the weights cache's Job pods in namespaces named JOBS_PREFIX...: each
    runs as a real `inferfleet` process, its nodes' disks under tmp_path/nodes (job_pods.py)."""
    if cluster.local is None:
        pytest.skip("the given cluster's KWOK completes Job pods itself")
    pods = JobPods(cluster.api_client, JOBS_PREFIX, tmp_path / "nodes").start()
    try:
        yield pods
    finally:
        pods.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.podengines import namespace_prefix

    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{namespace_prefix(request)}{base}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    prom = LocalPrometheus(workdir=tmp_path_factory.mktemp("prometheus"))
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def chart_identity(cluster: Cluster) -> Iterator[ChartIdentity]:
    """The chart's ServiceAccount and RBAC on the cluster: the operator's identity in the tests."""
    identity = ChartIdentity(cluster.api_client, cluster.kubeconfig)
    identity.install()
    try:
        yield identity
    finally:
        identity.uninstall()


@pytest.fixture
def run_operator(
    cluster: Cluster, chart_identity: ChartIdentity, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `inferfleet run` in the background; every operator started is stopped after the test.

    It runs with the chart's RBAC (tests/rbac.py), cluster-wide or for `namespaces` as the chart
    renders them, unless the test gives its own `kubeconfig`; the test itself stays admin.
    """
    started: list[OperatorProcess] = []

    def start(
        namespaces: list[str] | None = None,
        extra_args: list[str] | None = None,
        kubeconfig: Path | None = None,
    ) -> OperatorProcess:
        index = len(started)
        kubeconfig = kubeconfig or chart_identity.kubeconfig(
            tmp_path / f"operator-{index}.kubeconfig", namespaces or []
        )
        op = OperatorProcess(
            kubeconfig=kubeconfig,
            log_path=tmp_path / f"operator-{index}.log",
            namespaces=namespaces or [],
            extra_args=extra_args or [],
        )
        started.append(op)
        op.start()
        return op

    yield start
    denials = []
    for op in started:
        op.stop()
        if request.node.stash.get(FAILED, False):
            print_log_tail(op)
        denials += rbac_denials(op.log_text(), request.node.stash.get(RBAC_SETTLED_AT, None))
    # A call the chart does not grant fails the test even when the behaviour it serves goes untested.
    assert denials == [], "the chart's RBAC refused the operator:\n" + "\n".join(denials)


@pytest.fixture
def run_gateway(
    chart_identity: ChartIdentity, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start `inferfleet gateway` in the background with the chart's gateway RBAC, nothing more."""
    started: list[GatewayProcess] = []

    def start(namespaces: list[str] | None = None, extra_args: list[str] | None = None) -> GatewayProcess:
        index = len(started)
        kubeconfig = chart_identity.gateway_kubeconfig(
            tmp_path / f"gateway-{index}.kubeconfig", namespaces or []
        )
        gateway = GatewayProcess(
            kubeconfig, tmp_path / f"gateway-{index}.log", namespaces or [], extra_args or []
        )
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    denials = []
    for gateway in started:
        gateway.stop()
        if request.node.stash.get(FAILED, False):
            print(f"--- gateway log tail ({gateway.log_path}) ---\n{gateway.log_text()[-4000:]}")
        denials += rbac_denials(gateway.log_text(), request.node.stash.get(RBAC_SETTLED_AT, None))
    assert denials == [], "the chart's RBAC refused the gateway:\n" + "\n".join(denials)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = cache_dir() / "test-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> None:
    """The repo's generated CRDs, applied to the cluster and established."""
    from inferfleet.localcluster.crds import install_crds

    install_crds(cluster.api_client)
