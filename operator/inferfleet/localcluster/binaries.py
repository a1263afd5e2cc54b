"""The upstream binaries of the local cluster, built once per version by hack/build-binaries.sh."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inferfleet.localcluster.paths import cache_dir, pinned_versions, repo_root


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kwokctl: Path
    helm: Path
    kube_version: str

    def all(self) -> list[Path]:
        return [
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.etcd,
            self.kwok,
            self.kwokctl,
            self.helm,
        ]


def locate_binaries() -> Binaries:
    v = pinned_versions()
    root = cache_dir() / "bin"
    k8s = root / f"kubernetes-v{v['K8S_VERSION']}"
    kwok = root / f"kwok-v{v['KWOK_VERSION']}"
    return Binaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        etcd=root / f"etcd-v{v['ETCD_VERSION']}" / "etcd",
        kwok=kwok / "kwok",
        kwokctl=kwok / "kwokctl",
        helm=root / f"helm-v{v['HELM_VERSION']}" / "helm",
        kube_version=f"v{v['K8S_VERSION']}",
    )


def missing_binaries(binaries: Binaries) -> list[Path]:
    return [p for p in binaries.all() if not p.is_file()]


def ensure_binaries() -> Binaries:
    """Return the cached binaries, building the missing ones first (progress goes to stdout)."""
    binaries = locate_binaries()
    if missing_binaries(binaries):
        if shutil.which("go") is None:
            raise RuntimeError("Go is needed to build the local cluster's binaries; install Go >= 1.26")
        subprocess.run(["bash", str(repo_root() / "hack" / "build-binaries.sh")], check=True)
        missing = missing_binaries(binaries)
        if missing:
            raise RuntimeError(f"build-binaries.sh finished but these are missing: {missing}")
    return binaries
