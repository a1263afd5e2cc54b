"""`inferfleet demo`: the local GPU cluster, Prometheus and the operator, brought up together.

Until the InferenceService API lands this shows the foundation: the simulated GPU inventory
on a real control plane, a real Prometheus, and the operator connected and healthy.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from types import FrameType

from kubernetes import client

from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import cache_dir
from inferfleet.localcluster.prometheus import LocalPrometheus


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def describe_inventory(api: client.CoreV1Api) -> list[str]:
    by_zone_product: Counter[tuple[str, str]] = Counter()
    gpus: Counter[tuple[str, str]] = Counter()
    for node in api.list_node().items:
        labels = node.metadata.labels or {}
        key = (
            labels.get("topology.kubernetes.io/zone", "?"),
            labels.get("nvidia.com/gpu.product", "cpu-only"),
        )
        by_zone_product[key] += 1
        gpus[key] += int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))
    return [
        f"{zone:8} {product:24} nodes={n:2} gpus={gpus[(zone, product)]:3}"
        for (zone, product), n in sorted(by_zone_product.items())
    ]


def run_demo(*, duration_seconds: float | None, keep: bool, name: str) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    cluster = LocalCluster(name=name)
    prometheus = LocalPrometheus(workdir=cache_dir() / "demo" / "prometheus")
    operator = OperatorProcess(kubeconfig=cluster.kubeconfig, log_path=cache_dir() / "demo" / "operator.log")
    try:
        _say("building (first run only) and starting the local GPU cluster ...")
        started = time.monotonic()
        cluster.create()
        _say(f"cluster up in {time.monotonic() - started:.0f}s; KUBECONFIG={cluster.kubeconfig}")
        for line in describe_inventory(client.CoreV1Api(cluster.api_client())):
            _say("  " + line)
        prometheus.start()
        _say(f"Prometheus at {prometheus.url}")
        operator.start()
        _say(f"operator running (pid {operator.pid}), liveness {operator.liveness_url}")
        _say(f"operator log: {operator.log_path}")
        _say("Ctrl-C to stop" + (f"; stopping after {duration_seconds:.0f}s" if duration_seconds else ""))
        stop.wait(timeout=duration_seconds)
        return 0
    finally:
        operator.stop()
        prometheus.stop()
        if keep:
            _say(
                f"cluster left running: export KUBECONFIG={cluster.kubeconfig}; "
                f"`inferfleet cluster down --name {name}` removes it"
            )
        else:
            cluster.delete()
            _say("cluster removed")
