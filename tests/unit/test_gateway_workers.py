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


def start(tmp_path: Path, name: str, *args: str) -> Running:
    port, metrics = free_ports(2)
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferfleet", *args, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Running(process, port, metrics, log)


def stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path, "engine", "sim-engine", "--model", MODEL, "--tokens-per-second", "50",
                    "--max-concurrent", "64")  # fmt: skip
    wait_for(lambda: _answers(running.url + "/health"), timeout=30, what="the sim engine")
    yield running
    stop(running)


@pytest.fixture
def gateway(engine: Running, tmp_path: Path) -> Iterator[Running]:
    running = start_gateway(tmp_path, engine)
    wait_for(running.ready, timeout=60, what="both workers ready (/readyz)")
    yield running
    stop(running)


def start_gateway(tmp_path: Path, engine: Running, *extra: str) -> Running:
    _, metrics = free_ports(2)
    running = start(tmp_path, "gateway", "gateway", "--workers", "2", "--metrics-address", "127.0.0.1",
                    "--metrics-port", str(metrics), "--static-endpoints", f"{MODEL}={engine.url}",
                    "--shutdown-seconds", "20", *extra)  # fmt: skip
    running.metrics_port = metrics
    return running


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


def test_workers_share_the_port_sum_their_counts_and_a_killed_one_comes_back(gateway: Running) -> None:
    assert len(gateway.workers()) == 2
    assert [complete(gateway.url) for _ in range(40)] == [200] * 40
    assert gateway.metric("inferfleet_gateway_arrivals_total") == 40

    killed = gateway.workers().pop()
    os.kill(killed, signal.SIGKILL)
    wait_for(
        lambda: len(gateway.workers() - {killed}) == 2 and gateway.ready(),
        timeout=60,
        what="the killed worker started again and ready",
    )
    assert [complete(gateway.url) for _ in range(40)] == [200] * 40
    # The killed worker's counts stay in the sum (a counter never goes back); its gauges leave it.
    assert gateway.metric("inferfleet_gateway_arrivals_total") == 80
    assert gateway.metric("inferfleet_gateway_in_flight_requests") == 0
    assert "starting it again" in gateway.log_text()


async def _read_stream(url: str, started: asyncio.Event) -> list[str]:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 50, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200
        events = []
        async for line in r.content:
            if line.startswith(b"data: "):
                events.append(line[6:].strip().decode())
                started.set()
        return events


def test_sigterm_lets_every_workers_streams_finish(gateway: Running) -> None:
    async def scenario() -> list[list[str]]:
        # Each stream on its own connection: the kernel spreads them over both workers.
        starts = [asyncio.Event() for _ in range(8)]
        streams = [asyncio.create_task(_read_stream(gateway.url, s)) for s in starts]
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in starts)), timeout=30)
        gateway.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(asyncio.gather(*streams), timeout=60)

    for events in asyncio.run(scenario()):
        assert events[-1] == "[DONE]"
        assert len(events) == 51  # 50 tokens, each its own event, then [DONE]
    assert gateway.process.wait(timeout=30) == 0
    assert gateway.workers() == set()


def test_workers_stop_when_their_supervisor_is_killed(gateway: Running) -> None:
    workers = gateway.workers()
    gateway.process.kill()
    gateway.process.wait()

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    wait_for(gone, timeout=30, what="the orphaned workers to stop")


def test_a_worker_that_cannot_start_ends_the_supervisor_with_the_reason(
    engine: Running, tmp_path: Path
) -> None:
    """Not a restart loop inside the pod: the pod restarts, and its log says why."""
    missing = tmp_path / "no-such-kubeconfig"
    running = start(tmp_path, "gateway", "gateway", "--workers", "2", "--kubeconfig", str(missing))
    try:
        assert running.process.wait(timeout=60) == 1
    finally:
        stop(running)
    assert "exited with code 1 before it was ready" in running.log_text()


def test_a_worker_takes_no_connection_before_its_caches_are_synced(tmp_path: Path) -> None:
    """The kernel hands a listening worker connections whatever /readyz says: one that has not
    listed the services yet would answer 404 for every model. Here the API server never answers."""
    [nothing_there] = free_ports(1)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{nothing_there}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    _, metrics = free_ports(2)
    running = start(tmp_path, "gateway", "gateway", "--workers", "2", "--kubeconfig", str(kubeconfig),
                    "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics))  # fmt: skip
    running.metrics_port = metrics
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
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "inferfleet", "gateway", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(port), "--static-endpoints", f"{MODEL}=http://127.0.0.1:9"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr
