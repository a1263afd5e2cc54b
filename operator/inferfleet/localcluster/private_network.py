"""A private network namespace where the local cluster's pod IPs are local addresses.

The API server refuses loopback addresses in EndpointSlices, so KWOK pods get IPs in
198.18.0.0/16 (kwok-config.yaml), which nothing routes. `enter_private_network()` moves the
calling process into a network namespace of its own with a `local` route for that range on its
loopback device: every process it starts afterwards (the cluster, Prometheus, the operator, the
gateway) shares it, engines bind their pods' IPs (pod_engines.py), the gateway reaches them there,
nothing outside can reach any of them, and nothing outside changes. `inferfleet demo` runs in one;
tests/podengines.py does the same for the tests that want engines at pod IPs.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading

from inferfleet.localcluster.cluster import DEFAULT_POD_CIDR

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
NODE_ADDRESS = "198.19.0.1/32"
"""kube-apiserver advertises the address of the default route's device and will not start
without one; this one is outside the pod range and local too."""
_entered: list[str] = []
_host_network: list[int] = []  # an open descriptor of the network namespace this process left


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")


def _map_to_root(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


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
        _map_to_root(uid, gid)
    for command in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "route", "add", "local", pod_cidr, "dev", "lo"],
        ["ip", "address", "add", NODE_ADDRESS, "dev", "lo"],
        ["ip", "route", "add", "default", "dev", "lo"],
    ):
        subprocess.run(command, check=True)
    _entered.append(pod_cidr)


def on_host_network(command: list[str]) -> list[str]:
    """`command` run in the network this process left: for what needs the outside network (a
    package index), not the cluster. Unchanged when the process never left it."""
    if not _host_network:
        return command
    return ["nsenter", f"--net=/proc/{os.getpid()}/fd/{_host_network[0]}", "--", *command]


def in_private_network() -> bool:
    return bool(_entered)
