"""The local kubelet's readiness probes: thresholds, the status it writes, which pods it probes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from inferfleet.localcluster.cluster import NO_PROBED_NAMESPACE, LocalCluster
from inferfleet.localcluster.readiness_probes import (
    ContainerProbe,
    ProbedPod,
    build_probed_pod,
    build_ready_patch,
    is_probed,
    run_probe,
)
from tests.support import kwok_stage_keys


def engine_pod(namespace: str = "probed-a", probe: dict[str, Any] | None = None) -> dict[str, Any]:
    probe = (
        probe if probe is not None else {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
    )
    return {
        "metadata": {
            "namespace": namespace,
            "name": "p-0",
            "uid": "u1",
            "labels": {"inferfleet.io/service": "s"},
        },
        "spec": {
            "containers": [
                {
                    "name": "engine",
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": probe,
                },
                {"name": "sidecar"},
            ]
        },
        "status": {
            "podIP": "127.0.0.1",
            "phase": "Running",
            "containerStatuses": [{"name": "engine", "ready": False}, {"name": "sidecar", "ready": False}],
        },
    }


def test_a_container_turns_ready_after_success_threshold_and_unready_after_failure_threshold() -> None:
    probe = ContainerProbe("engine", {"successThreshold": 2, "failureThreshold": 3}, {}, due=0)
    assert [probe.record(True), probe.record(True)] == [False, True]
    assert probe.ready
    # A pass between failures starts the count again.
    assert [probe.record(False), probe.record(False), probe.record(True)] == [False, False, False]
    assert [probe.record(False), probe.record(False), probe.record(False)] == [False, False, True]
    assert not probe.ready
    assert (probe.passed, probe.failed) == (3, 5)


def test_the_defaults_are_the_kubelets_one_pass_three_failures() -> None:
    probe = ContainerProbe("engine", {}, {}, due=0)
    assert probe.record(True)
    assert [probe.record(False) for _ in range(3)] == [False, False, True]


def test_the_status_patch_sets_both_conditions_and_each_containers_ready() -> None:
    pod = build_probed_pod(engine_pod(), http_port=8000, now=0)
    now = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
    unready = build_ready_patch(pod, now)
    assert unready["metadata"] == {"uid": "u1"}
    assert [(c["type"], c["status"], c["reason"]) for c in unready["status"]["conditions"]] == [
        ("ContainersReady", "False", "ContainersNotReady"),
        ("Ready", "False", "ContainersNotReady"),
    ]
    assert unready["status"]["conditions"][1]["message"] == "containers with unready status: [engine]"
    # The container without a probe is ready once running, as with a kubelet.
    assert [s["ready"] for s in unready["status"]["containerStatuses"]] == [False, True]

    pod.probes[0].record(True)
    ready = build_ready_patch(pod, now)["status"]
    assert [(c["status"], c["reason"], c["message"]) for c in ready["conditions"]] == [
        ("True", None, None)
    ] * 2
    assert ready["conditions"][0]["lastTransitionTime"] == "2026-12-06T04:00:00Z"
    assert [s["ready"] for s in ready["containerStatuses"]] == [True, True]


def test_only_pods_with_a_readiness_probe_in_the_probed_namespaces_are_probed() -> None:
    assert is_probed(engine_pod("probed-a"), "probed-")
    assert is_probed(engine_pod("demo"), "")
    assert not is_probed(engine_pod("other"), "probed-")
    assert not is_probed(engine_pod("probed-a"), None)
    pod = engine_pod("probed-a")
    del pod["spec"]["containers"][0]["readinessProbe"]
    assert not is_probed(pod, "probed-")


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def probe_against(spec: dict[str, Any], port: int, http_port: int | None = None) -> bool:
    pod = engine_pod(probe=spec)
    pod["spec"]["containers"][0]["ports"][0]["containerPort"] = port
    probed: ProbedPod = build_probed_pod(pod, http_port, now=0)
    return run_probe(probed.probes[0], probed)


def test_each_probe_handler_runs_against_the_pods_ip(health_port: int) -> None:
    assert probe_against({"httpGet": {"path": "/health", "port": "http"}}, health_port)
    assert not probe_against({"httpGet": {"path": "/missing", "port": "http"}}, health_port)  # a 500
    assert not probe_against({"httpGet": {"path": "/health", "port": "metrics"}}, health_port)  # no such port
    assert probe_against({"tcpSocket": {"port": health_port}}, health_port)
    # exec: the engine's /health on the pod that serves HTTP, a pass on a group's workers.
    exec_probe = {"exec": {"command": ["python3", "-c", "..."]}}
    assert probe_against(exec_probe, health_port, http_port=health_port)
    assert probe_against(exec_probe, health_port, http_port=None)


def test_nothing_listening_fails_every_handler() -> None:
    with socket.socket() as bound:  # a port bound but not listening refuses connections
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert not probe_against({"httpGet": {"path": "/health", "port": "http"}}, port)
        assert not probe_against({"tcpSocket": {"port": "http"}}, port)
        assert not probe_against({"exec": {"command": ["true"]}}, port, http_port=port)


def test_the_kwok_config_leaves_a_prefix_to_the_prober_only_when_asked() -> None:
    def pod_ready_keys(cluster: LocalCluster) -> list[str]:
        return kwok_stage_keys(cluster, "pod-ready")

    assert any(NO_PROBED_NAMESPACE in key for key in pod_ready_keys(LocalCluster()))
    keys = pod_ready_keys(LocalCluster(probed_namespaces="probed-"))
    assert any('(.metadata.namespace | startswith("probed-"))' in key for key in keys)
    assert not any(NO_PROBED_NAMESPACE in key for key in keys)
    with pytest.raises(ValueError, match="namespace-name prefix"):
        LocalCluster(probed_namespaces='x") or true or ("')._kwok_config()
