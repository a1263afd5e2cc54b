"""`inferfleet gateway --workers N` as a user runs it: real processes, a real sim engine, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from inferfleet.localcluster.ports import free_ports
from inferfleet.localcluster.waiting import wait_for

MODEL = "tiny"
TOKENS_PER_SECOND = 50


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def serving(self) -> int:
        """Workers the supervisor has heard `serving` from, restarts included."""
        return self.log_text().count(") serving")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))

    def workers(self) -> set[int]:
        """The supervisor's gateway worker processes (not multiprocessing's resource tracker)."""
        found = set()
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text()
                command = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == self.process.pid and b"spawn_main" in command:
                found.add(int(proc.name))
        return found


def running_process(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def start(tmp_path: Path, name: str, args: list[str], port: int, metrics: int = 0) -> Running:
    log = tmp_path / f"{name}.log"
    command = [sys.executable, "-m", "inferfleet", *args, "--host", "127.0.0.1", "--port", str(port)]
    if metrics:
        command += ["--metrics-address", "127.0.0.1", "--metrics-port", str(metrics)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Running(process, port, metrics, log)


def stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Running]:
    [port] = free_ports(1)
    args = [
        "sim-engine",
        "--model",
        MODEL,
        "--tokens-per-second",
        str(TOKENS_PER_SECOND),
        "--max-concurrent",
        "64",
    ]
    running = start(tmp_path, "engine", args, port)
    wait_for(lambda: _answers(running.url + "/health"), timeout=30, what="the sim engine")
    yield running
    stop(running)


@pytest.fixture
def gateway(engine: Running, tmp_path: Path) -> Iterator[Running]:
    port, metrics = free_ports(2)  # one call: never the same port twice
    args = [
        "gateway",
        "--workers",
        "2",
        "--static-endpoints",
        f"{MODEL}={engine.url}",
        "--shutdown-seconds",
        "20",
    ]
    running = start(tmp_path, "gateway", args, port, metrics)
    wait_for(lambda: running.ready() and running.serving() == 2, timeout=60, what="both workers serving")
    yield running
    stop(running)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def complete(url: str) -> int:
    """One request on its own connection (urllib opens one per request): its status."""
    body = json.dumps({"model": MODEL, "prompt": "hello there", "max_tokens": 2}).encode()
    request = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return int(r.status)


async def _read_stream(url: str, tokens: int, started: asyncio.Event) -> list[str]:
    """A stream on its own connection: its data events, or [] when the connection broke."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": tokens, "stream": True}
    events = []
    try:
        async with aiohttp.ClientSession() as session, session.post(url + "/v1/completions", json=body) as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(line[6:].strip().decode())
                    started.set()
    except aiohttp.ClientError:
        return []
    return events


def test_workers_share_the_port_sum_their_counts_and_a_killed_one_comes_back(gateway: Running) -> None:
    assert [complete(gateway.url) for _ in range(40)] == [200] * 40
    assert gateway.metric("inferfleet_gateway_arrivals_total") == 40

    async def kill_one_mid_stream() -> list[list[str]]:
        starts = [asyncio.Event() for _ in range(16)]
        tokens = 5 * TOKENS_PER_SECOND  # 5 s each: still running when a worker is killed
        streams = [asyncio.create_task(_read_stream(gateway.url, tokens, s)) for s in starts]
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in starts)), timeout=30)
        assert gateway.metric("inferfleet_gateway_in_flight_requests") == 16
        os.kill(min(gateway.workers()), signal.SIGKILL)
        return await asyncio.wait_for(asyncio.gather(*streams), timeout=60)

    ended = asyncio.run(kill_one_mid_stream())
    whole = [e for e in ended if e and e[-1] == "[DONE]"]
    # The kernel spread the 16 connections over both workers: the killed one's streams broke.
    assert 0 < len(whole) < 16
    # The dead worker's in-flight requests left the sum with it; its counts stayed.
    assert gateway.metric("inferfleet_gateway_in_flight_requests") == 0
    wait_for(lambda: gateway.serving() == 3 and len(gateway.workers()) == 2, timeout=60,
             what="the killed worker started again and serving")  # fmt: skip
    assert [complete(gateway.url) for _ in range(40)] == [200] * 40
    assert gateway.metric("inferfleet_gateway_arrivals_total") == 40 + 16 + 40


def test_a_worker_whose_loop_is_stuck_is_killed_and_started_again(engine: Running, tmp_path: Path) -> None:
    """A stopped process stands for a stuck loop: it keeps its listener, and the connections the
    kernel hands it would hang."""
    port, metrics = free_ports(2)
    args = ["gateway", "--workers", "2", "--static-endpoints", f"{MODEL}={engine.url}",
            "--worker-timeout-seconds", "2"]  # fmt: skip
    running = start(tmp_path, "gateway", args, port, metrics)
    try:
        wait_for(lambda: running.serving() == 2, timeout=60, what="both workers serving")
        stuck = min(running.workers())
        os.kill(stuck, signal.SIGSTOP)
        wait_for(lambda: running.serving() == 3 and stuck not in running.workers(), timeout=60,
                 what="the stuck worker killed and another serving")  # fmt: skip
        assert f"(pid {stuck}) silent for" in running.log_text()
        assert [complete(running.url) for _ in range(40)] == [200] * 40  # none hangs on the stuck one
    finally:
        stop(running)


def test_sigterm_lets_every_workers_streams_finish(gateway: Running) -> None:
    workers = gateway.workers()
    idle = {pid: sockets(pid) for pid in workers}

    async def scenario() -> list[list[str]]:
        starts = [asyncio.Event() for _ in range(32)]
        streams = [asyncio.create_task(_read_stream(gateway.url, 50, s)) for s in starts]
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in starts)), timeout=30)
        assert all(sockets(pid) > idle[pid] for pid in workers), "each worker holds some streams"
        gateway.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(asyncio.gather(*streams), timeout=60)

    for events in asyncio.run(scenario()):
        assert len(events) == 51  # 50 tokens, each its own event,
        assert events[-1] == "[DONE]"  # then the end
    assert gateway.process.wait(timeout=30) == 0
    assert not any(running_process(pid) for pid in workers)


def test_workers_stop_when_their_supervisor_is_killed(gateway: Running) -> None:
    workers = gateway.workers()
    assert len(workers) == 2
    gateway.process.kill()
    gateway.process.wait()
    wait_for(lambda: not any(running_process(pid) for pid in workers), timeout=30,
             what="the orphaned workers to stop")  # fmt: skip


def test_a_worker_that_cannot_start_ends_the_supervisor_with_the_reason(tmp_path: Path) -> None:
    """Not a restart loop inside the pod: the pod restarts, and its log says why."""
    port, metrics = free_ports(2)
    missing = tmp_path / "no-such-kubeconfig"
    running = start(
        tmp_path, "gateway", ["gateway", "--workers", "2", "--kubeconfig", str(missing)], port, metrics
    )
    try:
        assert running.process.wait(timeout=60) == 1
    finally:
        stop(running)
    assert "exited with code 1 before it was ready" in running.log_text()


def test_a_worker_takes_no_connection_before_its_caches_are_synced(tmp_path: Path) -> None:
    """The kernel hands a listening worker connections whatever /readyz says: one that has not
    listed the services yet would answer 404 for every model. Here the API server never answers."""
    port, metrics, nothing_there = free_ports(3)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{nothing_there}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    running = start(
        tmp_path, "gateway", ["gateway", "--workers", "2", "--kubeconfig", str(kubeconfig)], port, metrics
    )
    try:
        # Each worker's lists failed twice, RELIST_BACKOFF_SECONDS apart: long past the point where
        # a worker that listens at start would listen.
        wait_for(
            lambda: all(running.log_text().count(f"worker {i}: watch of") >= 4 for i in (0, 1)),
            timeout=60,
            what="both workers' lists failing twice",
        )
        assert not running.ready()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", running.port), timeout=5).close()
    finally:
        stop(running)


def test_a_taken_port_is_refused_at_once(tmp_path: Path) -> None:
    [metrics] = free_ports(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "inferfleet", "gateway", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(port), "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics),
             "--static-endpoints", f"{MODEL}=http://127.0.0.1:9"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in result.stderr
