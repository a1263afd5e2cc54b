"""A real Kubernetes control plane on this machine: kwokctl's binary runtime over upstream binaries.

kube-apiserver, etcd, kube-controller-manager and kube-scheduler are the real ones; KWOK
plays the kubelets of the fake GPU nodes listed in the inventory. Every listener binds
127.0.0.1 (kwok-config.yaml). Pods get IPs from `pod_cidr` (198.18.0.0/16 by default, see
kwok-config.yaml): nothing routes there unless a private network namespace makes the range local
(tests/podengines.py), where pod_engines.py serves engines at the pods' own IPs.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.binaries import Binaries, ensure_binaries
from inferfleet.localcluster.inventory import build_nodes, load_inventory
from inferfleet.localcluster.paths import cache_dir
from inferfleet.localcluster.ports import is_port_free
from inferfleet.localcluster.waiting import wait_for


def kwok_config_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("kwok-config.yaml")))


def kube_scheduler_config_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("kube-scheduler.yaml")))


DEFAULT_POD_CIDR = "198.18.0.0/16"
"""kwok-config.yaml's `cidr`: in RFC 2544's benchmarking range, routed nowhere on the internet."""
NO_PROBED_NAMESPACE = '(.metadata.namespace | startswith("/"))'
"""kwok-config.yaml's pod-ready test for a namespace left to a prober: none ("/" starts no name)."""
NO_JOB_NAMESPACE = '(.metadata.namespace | startswith("//"))'
"""kwok-config.yaml's pod-complete test for a namespace whose cache Job pods JobPods runs: none."""
NO_FETCH_DELAY = 'then "0s" else empty end'
"""kwok-config.yaml's pod-complete delay for a weights fetch's pod: none."""


@dataclass
class LocalCluster:
    name: str = "inferfleet"
    workdir: Path = field(default_factory=lambda: cache_dir() / "kwok")
    binaries: Binaries | None = None
    extra_args: list[str] = field(default_factory=list)
    """Extra kwokctl flags, e.g. ["--kube-audit-policy", path]."""
    nodes: list[dict[str, Any]] | None = None
    """Node objects to register instead of the default inventory's (e.g. built with build_node)."""
    pod_cidr: str = DEFAULT_POD_CIDR
    """Where kwok takes pod IPs from (kwok's `cidr`; nodes carry no spec.podCIDR)."""
    probed_namespaces: str | None = None
    """A namespace-name prefix ("" for every namespace): there KWOK does not mark an InferenceService
    pod with a readinessProbe Ready; a prober playing the kubelet does once its probe passes
    (PodEngines(probed_namespaces=) the same prefix). None: KWOK marks every pod Ready on its timer."""
    job_namespaces: str | None = None
    """A namespace-name prefix: there KWOK leaves the pods of the weights cache's Jobs Running and
    JobPods (the same prefix) runs them as real processes. None: KWOK completes them all."""
    fetch_seconds: float = 0
    """How long the pod of a weights fetch Job (planning/weights_jobs.py: not a metadata read, not
    an eviction) runs before KWOK completes it: a stand-in for the download, which no container
    does here. 0: at once. In probed_namespaces PodEngines holds an engine pod whose
    `wait-for-weights` init container waits for its node's copy until that fetch Job completed."""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "clusters" / self.name / "kubeconfig.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "clusters" / self.name / "logs"

    def _kwokctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        binaries = self.binaries or ensure_binaries()
        env = os.environ | {"KWOK_WORKDIR": str(self.workdir), "KWOK_KUBE_VERSION": binaries.kube_version}
        return subprocess.run(
            [str(binaries.kwokctl), "--name", self.name, *args],
            env=env,
            check=check,
            text=True,
            capture_output=True,
        )

    def exists(self) -> bool:
        out = self._kwokctl("get", "clusters", check=False)
        return self.name in out.stdout.split()

    def create(self, *, timeout_seconds: int = 180) -> None:
        """Create and start the cluster, then register the inventory's nodes and wait for them."""
        binaries = self.binaries = self.binaries or ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.exists():
            self.delete()
        config_file = self.workdir / f"{self.name}-kwok-config.yaml"
        config_file.write_text(self._kwok_config())
        result = self._kwokctl(
            "--config",
            str(config_file),
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--kube-apiserver-binary",
            str(binaries.kube_apiserver),
            "--kube-controller-manager-binary",
            str(binaries.kube_controller_manager),
            "--kube-scheduler-binary",
            str(binaries.kube_scheduler),
            "--etcd-binary",
            str(binaries.etcd),
            "--kwok-controller-binary",
            str(binaries.kwok),
            "--kubeconfig",
            str(self.workdir / "kwokctl-contexts.yaml"),
            "--wait",
            f"{timeout_seconds}s",
            # kwokctl multiplies the kubelet's heartbeat timings by 5 by default; then a restarted
            # kwok-controller waits out 200 s node leases its previous process held before it
            # manages any node again. 1 keeps kubelet's defaults (40 s leases).
            "--heartbeat-factor",
            "1",
            "--kube-scheduler-config",
            str(kube_scheduler_config_path()),
            *self.extra_args,
            check=False,
        )
        config_file.unlink()  # kwokctl keeps its own copy in the cluster's directory
        if result.returncode != 0:
            raise RuntimeError(
                f"kwokctl create cluster failed ({result.returncode}):\n{result.stderr[-4000:]}\n"
                f"component logs: {self.logs_dir}"
            )
        self.register_nodes()

    def _kwok_config(self) -> str:
        text = kwok_config_path().read_text().replace(DEFAULT_POD_CIDR, self.pod_cidr)
        if self.fetch_seconds < 0:
            raise ValueError(f"fetch_seconds {self.fetch_seconds} < 0")
        text = text.replace(NO_FETCH_DELAY, f'then "{round(self.fetch_seconds * 1000)}ms" else empty end')
        for placeholder, prefix, what in (
            (NO_PROBED_NAMESPACE, self.probed_namespaces, "probed_namespaces"),
            (NO_JOB_NAMESPACE, self.job_namespaces, "job_namespaces"),
        ):
            if prefix is None:
                continue
            if not re.fullmatch(r"[a-z0-9-]*", prefix):
                raise ValueError(f"{what} {prefix!r} is no namespace-name prefix")
            text = text.replace(placeholder, f'(.metadata.namespace | startswith("{prefix}"))')
        return text

    def register_nodes(self, *, timeout_seconds: float = 60) -> list[str]:
        api = client.CoreV1Api(self.api_client())
        nodes = self.nodes if self.nodes is not None else build_nodes(load_inventory())
        for node in nodes:
            try:
                api.create_node(node)
            except ApiException as e:
                if e.status != 409:
                    raise
        names = [n["metadata"]["name"] for n in nodes]

        def all_ready() -> bool:
            ready = {
                n.metadata.name
                for n in api.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            }
            return set(names) <= ready

        wait_for(all_ready, timeout=timeout_seconds, what=f"{len(names)} KWOK nodes to be Ready")
        return names

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def delete(self) -> None:
        self._kwokctl("delete", "cluster", check=False)

    def stop(self) -> None:
        """Stop every component; return once the API server let go of its port. kwokctl may return
        while the old process still shuts down, and a start then fails to listen ("bind: address
        already in use"), which left a CI run with no API server after a restart test."""
        self._kwokctl("stop", "cluster", check=False)
        server = urlsplit(self.api_client().configuration.host)
        host, port = server.hostname or "127.0.0.1", server.port or 443
        wait_for(lambda: is_port_free(host, port), timeout=60, what=f"{host}:{port} let go after a stop")

    def start(self, *, timeout_seconds: float = 120) -> None:
        """Start a stopped cluster; return once kwok manages every node again (renewed its lease)."""
        started = datetime.now(UTC)
        self._kwokctl("start", "cluster")
        leases = client.CoordinationV1Api(self.api_client())

        def all_renewed() -> bool:
            items = leases.list_namespaced_lease("kube-node-lease").items
            return bool(items) and all(lease.spec.renew_time > started for lease in items)

        wait_for(all_renewed, timeout=timeout_seconds, what="kwok to renew every node lease after a restart")

    def component_logs(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.logs_dir.glob("*.log"))}
