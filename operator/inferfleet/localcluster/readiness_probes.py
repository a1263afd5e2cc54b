"""The kubelet's readiness probes for engine pods on the local cluster.

A kubelet marks a pod Ready only once the readinessProbe of each of its containers passed;
KWOK marks pods Ready on a timer instead. In the namespaces a LocalCluster leaves to a prober
(LocalCluster.probed_namespaces: kwok-config.yaml's pod-ready stage skips there every
InferenceService pod with a readinessProbe), this Prober runs those probes against the pod's IP
and writes the pod's Ready and ContainersReady conditions and its containers' `ready` through the
status subresource, as the kubelet does: Ready after successThreshold passes in a row, not Ready
after failureThreshold failures in a row, one probe every periodSeconds, the first after
initialDelaySeconds.

What differs from a kubelet: an `exec` probe cannot run here (there is no container); it stands
in with what the operator's multi-node exec probe checks (planning/groups.py): the engine's
/health on the pod that serves HTTP, a pass on the others. startupProbe is not run (the engines
here start at once). A terminating pod is no longer probed and keeps its last readiness (its
engine drains with its listener closed, where a real engine behind its preStop hook still
answers /health). readinessGates are not looked at.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

USER_AGENT = "kube-probe/inferfleet-local"


@dataclass
class ContainerProbe:
    """One container's readinessProbe and what the kubelet keeps about it."""

    container: str
    probe: dict[str, Any]
    ports: dict[str, int]
    """The container's named ports, for a probe that names its port."""
    due: float
    ready: bool = False
    """A readiness probe starts failed: the container is not ready until it passes."""
    in_a_row: int = 0
    """Consecutive results that disagree with `ready` (successes while not ready, failures while ready)."""
    passed: int = 0
    failed: int = 0

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds", 10))

    def record(self, success: bool) -> bool:
        """Count a result; return whether the container's readiness changed."""
        self.passed, self.failed = self.passed + success, self.failed + (not success)
        if success == self.ready:
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        threshold = self.probe.get("successThreshold" if success else "failureThreshold", 1 if success else 3)
        if self.in_a_row < int(threshold):
            return False
        self.ready, self.in_a_row = success, 0
        return True


@dataclass
class ProbedPod:
    namespace: str
    name: str
    uid: str
    ip: str
    http_port: int | None
    """The port the pod's engine serves HTTP on, if it serves any (a group's workers do not)."""
    statuses: list[dict[str, Any]]
    """The pod's containerStatuses as KWOK started them (not ready)."""
    probes: list[ContainerProbe] = field(default_factory=list)
    reported: bool = False
    """The Ready condition as last written (KWOK's pod-start wrote False)."""

    @property
    def ready(self) -> bool:
        return all(p.ready for p in self.probes)

    @property
    def passed(self) -> int:
        return sum(p.passed for p in self.probes)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.probes)


def is_probed(pod: dict[str, Any], namespace_prefix: str | None) -> bool:
    """Whether KWOK leaves this pod's readiness to a prober (kwok-config.yaml's pod-ready stage).

    The caller watches InferenceService pods only, as the stage's selector also requires.
    """
    containers = pod["spec"].get("containers") or []
    return (
        namespace_prefix is not None
        and pod["metadata"]["namespace"].startswith(namespace_prefix)
        and any(c.get("readinessProbe") is not None for c in containers)
    )


def build_probed_pod(pod: dict[str, Any], http_port: int | None, now: float) -> ProbedPod:
    meta, status = pod["metadata"], pod["status"]
    probed = ProbedPod(
        meta["namespace"], meta["name"], meta["uid"], status["podIP"], http_port,
        [dict(s) for s in status.get("containerStatuses") or []],
    )  # fmt: skip
    for container in pod["spec"]["containers"]:
        probe = container.get("readinessProbe")
        if probe is not None:
            ports = {
                p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")
            }
            due = now + float(probe.get("initialDelaySeconds", 0))
            probed.probes.append(ContainerProbe(container["name"], probe, ports, due))
    return probed


def build_ready_patch(probed: ProbedPod, now: datetime) -> dict[str, Any]:
    """The status patch a kubelet writes when a pod's readiness changes."""
    ready = probed.ready
    unready = [p.container for p in probed.probes if not p.ready]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def condition(type_: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": "True" if ready else "False",
            "lastTransitionTime": stamp,
            "reason": None if ready else "ContainersNotReady",
            "message": None if ready else f"containers with unready status: [{' '.join(unready)}]",
        }

    # containerStatuses has no merge key: the list is replaced whole.
    statuses = [s | {"ready": s.get("name") not in unready} for s in probed.statuses]
    return {
        "metadata": {"uid": probed.uid},  # a same-named successor (a StatefulSet's) is not this pod
        "status": {
            "conditions": [condition("ContainersReady"), condition("Ready")],
            "containerStatuses": statuses,
        },
    }


def _port(value: Any, ports: dict[str, int]) -> int | None:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return ports.get(value)


def _http_get(
    host: str, port: int, path: str, timeout: float, https: bool = False, headers: Any = ()
) -> bool:
    if https:
        context = ssl._create_unverified_context()  # the kubelet does not verify probe certificates
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        sent = {"User-Agent": USER_AGENT} | {h["name"]: h["value"] for h in headers}
        connection.request("GET", path, headers=sent)
        return 200 <= connection.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def run_probe(probe: ContainerProbe, pod: ProbedPod) -> bool:
    """One run of a container's readinessProbe against the pod's IP: whether it passed."""
    spec, timeout = probe.probe, float(probe.probe.get("timeoutSeconds", 1))
    if "httpGet" in spec:
        get = spec["httpGet"]
        port = _port(get.get("port"), probe.ports)
        return port is not None and _http_get(
            get.get("host") or pod.ip, port, get.get("path") or "/", timeout,
            get.get("scheme") == "HTTPS", get.get("httpHeaders") or (),
        )  # fmt: skip
    if "tcpSocket" in spec:
        port = _port(spec["tcpSocket"].get("port"), probe.ports)
        if port is None:
            return False
        try:
            socket.create_connection((spec["tcpSocket"].get("host") or pod.ip, port), timeout=timeout).close()
        except OSError:
            return False
        return True
    if "exec" in spec:  # see the module's docstring
        return pod.http_port is None or _http_get(pod.ip, pod.http_port, "/health", timeout)
    return False


class Prober:
    """Runs the readiness probes of the pods it is shown, on one thread, and writes their readiness."""

    def __init__(self, core: client.CoreV1Api, on_error: Callable[[str], None]) -> None:
        self._core = core
        self._on_error = on_error
        self._lock = threading.Lock()
        self._pods: dict[str, ProbedPod] = {}  # by pod uid
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-probes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def observe(self, pod: dict[str, Any], http_port: int | None) -> None:
        """A pod's latest state: probed from when it runs with an IP until it turns terminating."""
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            self.forget(meta["uid"])
            return
        if not status.get("podIP") or status.get("phase") != "Running":
            return
        with self._lock:
            if meta["uid"] in self._pods:
                return
            self._pods[meta["uid"]] = build_probed_pod(pod, http_port, time.monotonic())
        self._wake.set()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._pods.pop(uid, None)

    def retain(self, uids: set[str]) -> None:
        """Forget every pod not in `uids` (after a fresh listing)."""
        with self._lock:
            for uid in [u for u in self._pods if u not in uids]:
                del self._pods[uid]

    def pod(self, namespace: str, name: str) -> ProbedPod | None:
        with self._lock:
            return next((p for p in self._pods.values() if (p.namespace, p.name) == (namespace, name)), None)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                due = [(pod, probe) for pod in self._pods.values() for probe in pod.probes]
            now = time.monotonic()
            for pod, probe in due:
                if probe.due <= now and not self._stop.is_set():
                    probe.due = now + probe.period
                    try:
                        self._probe(pod, probe)
                    except Exception as e:  # reported through on_error; the probing goes on
                        self._on_error(f"probing pod {pod.namespace}/{pod.name}: {e!r}")
            with self._lock:
                next_due = min((p.due for pod in self._pods.values() for p in pod.probes), default=None)
            self._wake.wait(None if next_due is None else max(0.0, next_due - time.monotonic()))
            self._wake.clear()

    def _probe(self, pod: ProbedPod, probe: ContainerProbe) -> None:
        probe.record(run_probe(probe, pod))
        if pod.ready == pod.reported:
            return  # unchanged, or a write that failed is tried again after the next probe
        with self._lock:
            if self._pods.get(pod.uid) is not pod:
                return  # terminating or gone meanwhile: its readiness stays as it was
        patch = build_ready_patch(pod, datetime.now(UTC))
        try:
            self._core.patch_namespaced_pod_status(pod.name, pod.namespace, patch)
        except ApiException as e:
            if e.status in (404, 409, 422):  # gone, or a successor under the same name
                self.forget(pod.uid)
            else:
                self._on_error(
                    f"could not write readiness of pod {pod.namespace}/{pod.name}: {e.status} {e.reason}"
                )
            return
        except Exception as e:  # the API server restarting: as a kubelet, try again later
            log.warning("pod %s/%s: could not write readiness: %s", pod.namespace, pod.name, e)
            return
        pod.reported = pod.ready
        log.info("pod %s/%s: Ready=%s (probe of %s)", pod.namespace, pod.name, pod.ready, probe.container)
