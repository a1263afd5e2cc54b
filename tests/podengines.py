"""Real engines at KWOK pods' own IPs, for tests: a private network where the pod range is local.

Before the session starts its cluster, inferfleet.localcluster.private_network moves this
process into a network namespace of its own where the pod range is local (see its docstring).
It does so when a collected test asks for the `pod_engines` fixture: tests/conftest.py calls
enter_private_network_if_wanted() from its pytest_collection_modifyitems and imports the fixture
(or run pytest with `-p tests.podengines`).

Readiness is the kubelet's as well: the session's cluster leaves pods in namespaces named with
PROBED_PREFIX to a prober (LocalCluster.probed_namespaces), and the `namespace` fixture of a test
that asks for `pod_engines` carries that prefix, so there a pod turns Ready only once its engine
answers its readinessProbe. Other tests' pods are marked Ready by KWOK, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.private_network import enter_private_network, in_private_network

__all__ = ["pod_engines"]

PROBED_PREFIX = "probed-"
"""Namespaces whose pods' readiness PodEngines decides by their probes (see the module's docstring)."""

if TYPE_CHECKING:  # tests/conftest.py imports this module
    from tests.conftest import Cluster


def enter_private_network_if_wanted(items: list[pytest.Item]) -> None:
    """From pytest_collection_modifyitems, before any fixture runs (the cluster starts inside too)."""
    wanted = any("pod_engines" in getattr(item, "fixturenames", ()) for item in items)
    if wanted and not os.environ.get("INFERFLEET_TEST_KUBECONFIG"):
        enter_private_network()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    enter_private_network_if_wanted(items)


def namespace_prefix(request: pytest.FixtureRequest) -> str:
    """For the `namespace` fixture: a test with engines gets a namespace whose pods they probe."""
    return PROBED_PREFIX if "pod_engines" in request.fixturenames else ""


@pytest.fixture
def pod_engines(cluster: Cluster) -> Iterator[PodEngines]:
    """The kubelet's part for engine pods: an engine at each pod's IP, which decides the pod's
    readiness by its probe (in the test's `namespace`), while the test runs."""
    if not in_private_network():
        pytest.skip("pod engines need the local cluster in a private network (tests.podengines plugin)")
    engines = PodEngines(cluster.api_client, probed_namespaces=PROBED_PREFIX)
    engines.start()
    try:
        yield engines
    finally:
        engines.stop()
