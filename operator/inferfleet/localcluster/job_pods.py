"""The kubelet's part for the weights cache's Job pods on the local cluster: the real process.

KWOK runs no container, and elsewhere it completes a fetch Job's pod on a timer. In the namespaces
named with LocalCluster.job_namespaces (the same prefix given here), KWOK leaves the pods of fetch,
eviction and metadata Jobs (label inferfleet.io/model-cache=fetch) Running, and JobPods runs each
one's container as a local process once it is Running and Ready: `inferfleet <args>`, the image's
entrypoint, with

* its volumes on the pod's node: a claim's local volume at `<node_root>/<node>/<the volume's
  path>`, an emptyDir in a directory of its own; a path in an argument or an environment value
  under a mount's path is moved to where that mount is;
* its environment: plain values, and `secretKeyRef`s read from the pod's namespace, as a
  kubelet reads them (nothing of this process's own environment but PATH);
* `/dev/termination-log` in a file of its own.

When the process exits, the pod's status says so as a kubelet's would: phase Succeeded or Failed,
the container terminated with its exit code and its termination message (the file, or with
`FallbackToLogsOnError` the tail of its output when it failed and left none). The Job controller
of the real kube-controller-manager does the rest: completions, backoffLimit and the Job's
podFailurePolicy. A pod deleted while its process runs has the process killed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.pod_watch import PodWatch
from inferfleet.planning.conditions import find_true_condition
from inferfleet.planning.weights_naming import CACHE_LABEL

log = logging.getLogger(__name__)

JOB_POD_SELECTOR = f"{CACHE_LABEL}=fetch"
TERMINATION_LOG = "/dev/termination-log"
MESSAGE_BYTES = 4096
"""A kubelet keeps at most this much of a termination message."""
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
"""FallbackToLogsOnError: the last lines of the container's output, at most these bytes."""


@dataclass(frozen=True)
class JobRun:
    """One container as a local process."""

    argv: list[str]
    env: dict[str, str]
    termination_log: Path
    fallback_to_logs: bool


def compute_mounted_path(value: str, mounts: Mapping[str, Path]) -> str:
    """`value` moved to where its mount is, when it is a mount's path or under it."""
    for mount_path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(local) + value[len(mount_path.rstrip("/")) :]
    return value


def build_job_run(
    container: Mapping[str, Any], mounts: Mapping[str, Path], env: Mapping[str, str], scratch: Path
) -> JobRun:
    """The process for `container`: `mounts` maps its mount paths to local directories, `env` is
    its environment as resolved; its termination log goes to `scratch`."""
    termination_log = scratch / "termination-log"
    places = {**mounts, TERMINATION_LOG: termination_log}
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    argv = [compute_mounted_path(str(a), places) for a in command]
    if not container.get("command"):  # the image's entrypoint
        argv = [sys.executable, "-m", "inferfleet", *argv]
    local_env = {k: compute_mounted_path(v, places) for k, v in env.items()}
    return JobRun(
        argv=argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch / "home"), **local_env},
        termination_log=termination_log,
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
    )


def compute_termination_message(written: bytes, output: bytes, exit_code: int, fallback_to_logs: bool) -> str:
    """What the kubelet reports: the file's text; or, when it is empty, the container failed and
    the policy says so, the tail of its output."""
    if written.strip() or not (fallback_to_logs and exit_code != 0):
        return written[:MESSAGE_BYTES].decode(errors="replace")
    tail = b"\n".join(output.splitlines()[-FALLBACK_LINES:])[-FALLBACK_BYTES:]
    return tail.decode(errors="replace")


def build_terminated_status(
    pod: Mapping[str, Any], exit_code: int, message: str, started: datetime, finished: datetime
) -> dict[str, Any]:
    """The pod's status once its one container exited."""
    [container] = pod["spec"]["containers"]
    when = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "message": message,
        "startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finishedAt": when,
    }
    not_ready = {"status": "False", "reason": "PodCompleted", "lastTransitionTime": when}
    return {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [{"type": "Ready", **not_ready}, {"type": "ContainersReady", **not_ready}],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }


def is_started(pod: Mapping[str, Any]) -> bool:
    """Running and Ready: KWOK played every stage before completion, so none overwrites the end."""
    status = pod.get("status") or {}
    ready = find_true_condition(status.get("conditions"), "Ready") is not None
    return status.get("phase") == "Running" and ready and bool((pod.get("spec") or {}).get("nodeName"))


class JobPods:
    """Runs the weights cache's Job pods of the namespaces named with `namespaces` (a prefix)."""

    def __init__(self, api_client: client.ApiClient, namespaces: str, node_root: Path) -> None:
        self.namespaces = namespaces
        self.node_root = node_root
        self._core = client.CoreV1Api(api_client)
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen[bytes] | None] = {}  # by pod uid; None: starting
        self._done: set[str] = set()
        self._killed: set[str] = set()  # pods gone while their process ran or was starting
        self._watch = PodWatch(
            self._core, JOB_POD_SELECTOR, self._on_pod, self._on_deleted, "job-pods", self._on_listed
        )

    def start(self) -> JobPods:
        self._watch.start()
        return self

    def stop(self) -> None:
        self._watch.stop()
        with self._lock:
            running = [p for p in self._running.values() if p is not None]
        for process in running:
            process.kill()

    def node_dir(self, node: str) -> Path:
        """Where `node`'s filesystem is."""
        return self.node_root / node

    def _on_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if not str(meta["namespace"]).startswith(self.namespaces):
            return
        if meta.get("deletionTimestamp"):
            self._on_deleted(pod)
            return
        uid = meta["uid"]
        with self._lock:
            if uid in self._running or uid in self._done or not is_started(pod):
                return
            self._running[uid] = None
        threading.Thread(target=self._run, args=(pod,), name=f"job-{meta['name']}", daemon=True).start()

    def _on_deleted(self, pod: dict[str, Any]) -> None:
        self._kill(pod["metadata"]["uid"])

    def _on_listed(self, pods: list[dict[str, Any]]) -> None:
        """A pod deleted while the watch was down has no DELETED event: its absence says it."""
        present = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            gone = [uid for uid in self._running if uid not in present]
        for uid in gone:
            self._kill(uid)

    def _kill(self, uid: str) -> None:
        with self._lock:
            if uid not in self._running:
                return
            self._killed.add(uid)  # one still starting is killed as soon as it exists
            process = self._running[uid]
        if process is not None:
            process.kill()

    def _run(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        try:
            with tempfile.TemporaryDirectory(prefix=f"{meta['name']}-") as scratch:
                run = self._build_run(pod, Path(scratch))
                started = datetime.now(UTC)
                process = subprocess.Popen(
                    run.argv, env=run.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                with self._lock:
                    self._running[uid] = process
                    killed = uid in self._killed
                if killed:
                    process.kill()
                output, _ = process.communicate()
                written = run.termination_log.read_bytes() if run.termination_log.exists() else b""
                message = compute_termination_message(
                    written, output, process.returncode, run.fallback_to_logs
                )
                code = process.returncode if process.returncode >= 0 else 128 - process.returncode
                log.info("job pod %s/%s exited %d: %s", meta["namespace"], meta["name"], code, message[:200])
                status = build_terminated_status(pod, code, message, started, datetime.now(UTC))
                self._report(meta["namespace"], meta["name"], status)
        except Exception:
            log.exception("job pod %s/%s: running it failed", meta["namespace"], meta["name"])
        finally:
            with self._lock:
                self._running.pop(uid, None)
                self._killed.discard(uid)
                self._done.add(uid)

    def _build_run(self, pod: dict[str, Any], scratch: Path) -> JobRun:
        namespace, spec = pod["metadata"]["namespace"], pod["spec"]
        [container] = spec["containers"]
        volumes = {
            v["name"]: self._volume_dir(namespace, spec["nodeName"], v, scratch) for v in spec["volumes"]
        }
        mounts = {
            m["mountPath"]: volumes[m["name"]] / m.get("subPath", "")
            for m in container.get("volumeMounts") or []
        }
        for local in mounts.values():
            local.mkdir(parents=True, exist_ok=True)
        env = {e["name"]: self._env_value(namespace, e) for e in container.get("env") or []}
        return build_job_run(container, mounts, env, scratch)

    def _volume_dir(self, namespace: str, node: str, volume: Mapping[str, Any], scratch: Path) -> Path:
        claim = volume.get("persistentVolumeClaim")
        if claim is not None:
            pvc = self._core.read_namespaced_persistent_volume_claim(claim["claimName"], namespace)
            pv = self._core.read_persistent_volume(pvc.spec.volume_name)
            path = pv.spec.local.path if pv.spec.local is not None else pv.spec.host_path.path
            return self.node_dir(node) / str(path).lstrip("/")
        if "emptyDir" in volume:
            return scratch / "volumes" / str(volume["name"])
        raise ValueError(f"volume {volume['name']!r}: only claims and emptyDirs run here")

    def _env_value(self, namespace: str, entry: Mapping[str, Any]) -> str:
        if "value" in entry:
            return str(entry["value"])
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise ValueError(f"env {entry['name']!r}: only values and secretKeyRefs run here")
        secret = self._core.read_namespaced_secret(ref["name"], namespace)
        return b64decode((secret.data or {})[ref["key"]]).decode()

    def _report(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self._core.patch_namespaced_pod_status(name, namespace, status)
        except ApiException as e:
            if e.status != 404:  # gone meanwhile: nobody to tell
                raise
