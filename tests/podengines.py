"""Real engines at KWOK pods' own IPs, for tests: a private network where the pod range is local.

The API server refuses loopback addresses in EndpointSlices, so KWOK pods get IPs in
198.18.0.0/16 (kwok-config.yaml), which nothing routes. Before the session starts its cluster,
`enter_private_network()` moves this process into a network namespace of its own with a `local`
route for that range on its loopback device: every process the session starts (the cluster, the
operator, the gateway) shares it, engines bind their pods' IPs, nothing outside can reach them,
and nothing outside changes. It does so when a collected test asks for the `pod_engines`
fixture: tests/conftest.py calls enter_private_network_if_wanted() from its
pytest_collection_modifyitems and imports the fixture (or run pytest with `-p tests.podengines`).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from inferfleet.localcluster.cluster import DEFAULT_POD_CIDR
from inferfleet.localcluster.pod_engines import PodEngines

if TYPE_CHECKING:  # tests/conftest.py imports this module
    from tests.conftest import Cluster

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
NODE_ADDRESS = "198.19.0.1/32"
_entered: list[str] = []
_host_network: list[int] = []  # an open descriptor of the network namespace the session left


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")


def enter_private_network(pod_cidr: str = DEFAULT_POD_CIDR) -> None:
    """Move this process into its own network namespace: lo up, `pod_cidr` local on lo.

    Only the calling thread moves (and what it starts later), so call it before any thread or
    server starts. Root needs CAP_SYS_ADMIN; others get a user namespace mapping them to root.
    """
    if pod_cidr in _entered:
        return
    if threading.active_count() != 1:
        raise RuntimeError("enter_private_network() must run before any thread starts")
    uid, gid = os.getuid(), os.getgid()
    _host_network.append(os.open("/proc/self/ns/net", os.O_RDONLY))
    if uid == 0:
        _unshare(CLONE_NEWNET)
    else:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "local", pod_cidr, "dev", "lo"],
        # kube-apiserver advertises the address of the default route's device and will not start
        # without one; this one is outside the pod range and local too.
        ["ip", "address", "add", NODE_ADDRESS, "dev", "lo"],
        ["ip", "route", "add", "default", "dev", "lo"],
    ):
        subprocess.run(command, check=True)
    _entered.append(pod_cidr)


def on_host_network(command: list[str]) -> list[str]:
    """`command` run in the network the session left: for what needs the outside network (a
    package index), not the cluster. Unchanged when the session never left it."""
    if not _host_network:
        return command
    return ["nsenter", f"--net=/proc/{os.getpid()}/fd/{_host_network[0]}", "--", *command]


def enter_private_network_if_wanted(items: list[pytest.Item]) -> None:
    """From pytest_collection_modifyitems, before any fixture runs (the cluster starts inside too)."""
    wanted = any("pod_engines" in getattr(item, "fixturenames", ()) for item in items)
    if wanted and not os.environ.get("INFERFLEET_TEST_KUBECONFIG"):
        enter_private_network()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    enter_private_network_if_wanted(items)


@pytest.fixture
def pod_engines(cluster: Cluster) -> Iterator[PodEngines]:
    """The kubelet's part for engine pods: an engine at each pod's IP while the test runs."""
    if not _entered:
        pytest.skip("pod engines need the local cluster in a private network (tests.podengines plugin)")
    engines = PodEngines(cluster.api_client)
    engines.start()
    try:
        yield engines
    finally:
        engines.stop()
