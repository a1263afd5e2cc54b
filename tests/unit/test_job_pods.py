"""JobPods' pure parts: a weights cache Job's container as a local process, and how it ended as
a kubelet reports it. The process against the real Job controller: tests/integration/test_weights_jobs.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from inferfleet.localcluster.cluster import NO_JOB_NAMESPACE, LocalCluster
from inferfleet.localcluster.job_pods import (
    JobPods,
    build_job_run,
    build_terminated_status,
    compute_mounted_path,
    compute_termination_message,
    is_started,
)
from inferfleet.localcluster.ports import is_port_free
from inferfleet.planning.weights_jobs import CacheSettings
from inferfleet.planning.weights_nodes import CachedCopy, build_evict_job
from tests.support import kwok_stage_keys

MOUNTS = {"/cache": Path("/nodes/n1/var/lib/models/ns.uid"), "/cache/sub": Path("/elsewhere")}


@pytest.mark.parametrize(
    ("value", "moved"),
    [
        ("/cache", "/nodes/n1/var/lib/models/ns.uid"),
        ("/cache/hf/x", "/nodes/n1/var/lib/models/ns.uid/hf/x"),
        ("/cache/sub/y", "/elsewhere/y"),  # the longest mount path wins
        ("/cachet", "/cachet"),  # not under the mount, only sharing its prefix
        ("hf://acme/model", "hf://acme/model"),
    ],
)
def test_a_path_under_a_mount_moves_to_where_the_mount_is(value: str, moved: str) -> None:
    assert compute_mounted_path(value, MOUNTS) == moved


def test_an_eviction_jobs_container_runs_the_entrypoint_with_its_paths_on_the_node(tmp_path: Path) -> None:
    copy = CachedCopy(
        namespace="ns", source="hf://acme/m", node="n1", bytes=1, last_used="2026-12-06T10:00:00Z"
    )
    job = build_evict_job(copy, "uid", CacheSettings(root="/var/lib/models", image="img", namespace="ops"))
    [container] = job["spec"]["template"]["spec"]["containers"]
    run = build_job_run(container, {"/cache": tmp_path / "vol"}, {"HF_TOKEN": "t"}, tmp_path / "scratch")
    assert run.argv == [
        sys.executable, "-m", "inferfleet", "fetch-model", "hf://acme/m", "--evict",
        "--cache-root", str(tmp_path / "vol"),
        "--termination-log", str(tmp_path / "scratch" / "termination-log"),
    ]  # fmt: skip
    assert run.env["HF_TOKEN"] == "t"
    assert set(run.env) == {"PATH", "HOME", "HF_TOKEN"}  # nothing else of the runner's environment
    assert run.fallback_to_logs


@pytest.mark.parametrize(
    ("written", "output", "code", "fallback", "message"),
    [
        (b'{"bytes": 3}\n', b"log", 0, True, '{"bytes": 3}\n'),
        (b"", b"a\nb\n", 1, True, "a\nb"),  # failed and left nothing: the tail of its output
        (b"", b"a\nb\n", 1, False, ""),  # ... unless the policy says File
        (b"", b"a\nb\n", 0, True, ""),  # succeeded: no fallback
        (b"x" * 5000, b"", 0, False, "x" * 4096),  # a kubelet keeps 4 KiB
    ],
)
def test_the_termination_message_is_the_file_or_on_failure_the_output_tail(
    written: bytes, output: bytes, code: int, fallback: bool, message: str
) -> None:
    assert compute_termination_message(written, output, code, fallback) == message


def test_the_output_tail_keeps_the_last_80_lines_within_2048_bytes() -> None:
    output = b"\n".join(f"line {i}".encode() for i in range(200))
    tail = compute_termination_message(b"", output, 1, True)
    assert tail.splitlines()[0] == "line 120"
    assert tail.splitlines()[-1] == "line 199"
    assert len(compute_termination_message(b"", b"y" * 9000, 1, True)) == 2048


@pytest.mark.parametrize(("code", "phase", "reason"), [(0, "Succeeded", "Completed"), (5, "Failed", "Error")])
def test_an_exited_container_ends_the_pod_as_a_kubelet_reports_it(code: int, phase: str, reason: str) -> None:
    pod = {"spec": {"containers": [{"name": "fetch", "image": "img"}]}}
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    status = build_terminated_status(pod, code, "msg", at, at)["status"]
    assert status["phase"] == phase
    [container] = status["containerStatuses"]
    assert container["name"] == "fetch"
    assert container["state"]["terminated"] == {
        "exitCode": code, "reason": reason, "message": "msg",
        "startedAt": "2026-12-06T10:00:00Z", "finishedAt": "2026-12-06T10:00:00Z",
    }  # fmt: skip
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "False",
        "ContainersReady": "False",
    }


@pytest.mark.parametrize(
    ("phase", "ready", "node", "started"),
    [
        ("Running", "True", "n1", True),
        ("Running", "False", "n1", False),  # KWOK has a stage left to play
        ("Pending", "False", "n1", False),
        ("Running", "True", None, False),
        ("Succeeded", "False", "n1", False),
    ],
)
def test_a_pod_runs_once_kwok_played_every_stage_before_completion(
    phase: str, ready: str, node: str | None, started: bool
) -> None:
    pod = {
        "spec": {"nodeName": node},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]},
    }
    assert is_started(pod) is started


def test_the_kwok_config_leaves_cache_job_pods_of_a_prefix_running_only_when_asked() -> None:
    def complete_keys(cluster: LocalCluster) -> list[str]:
        return kwok_stage_keys(cluster, "pod-complete")

    assert any(NO_JOB_NAMESPACE in key for key in complete_keys(LocalCluster()))
    keys = complete_keys(LocalCluster(probed_namespaces="probed-", job_namespaces="jobs-"))
    assert any('(.metadata.namespace | startswith("jobs-")) and' in key for key in keys)
    assert not any(NO_JOB_NAMESPACE in key for key in keys)
    with pytest.raises(ValueError, match="job_namespaces"):
        LocalCluster(job_namespaces='x") or true or ("')._kwok_config()


def test_a_port_is_free_once_nothing_listens_on_it() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not is_port_free("127.0.0.1", port)  # a server still listening holds it
    assert is_port_free("127.0.0.1", port)


def test_a_job_pod_missing_from_a_new_listing_has_its_process_killed(tmp_path: Path) -> None:
    """A pod deleted while the watch was down sends no DELETED event; the next listing shows it."""
    job_pods = JobPods(client.ApiClient(client.Configuration()), "jobs-", tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    gone, kept = subprocess.Popen(sleeper), subprocess.Popen(sleeper)
    try:
        job_pods._running.update({"gone-uid": gone, "kept-uid": kept})
        job_pods._on_listed([{"metadata": {"uid": "kept-uid", "namespace": "jobs-a", "name": "kept"}}])
        assert gone.wait(timeout=10) == -9  # killed, as a kubelet kills a deleted pod's container
        assert kept.poll() is None  # still listed: still running
    finally:
        gone.kill()
        kept.kill()
        kept.wait()
