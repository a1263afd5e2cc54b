"""`inferfleet gateway --workers N`: N gateway processes sharing one API port, one /metrics.

One asyncio process relays a streamed chunk in ~15 µs of CPU, and a burst of chunks from the
engines queues behind one core: at 1,000 streams a second worker cuts the added p99 TTFT several
fold on 2 cores (bench/gateway/README.md). So a pod may run several.

- The kernel spreads new connections over the workers' listeners (SO_REUSEPORT). The supervisor
  binds the port first without listening, so port 0 names one port for all of them, and no
  connection ever waits on the supervisor. A worker listens only once its caches are synced.
- Each worker is a whole gateway: its own discovery, pools and slots (slots and the queue bound
  count per worker, as they count per gateway replica).
- Their metrics meet in prometheus_client's multiprocess files; the supervisor serves them summed
  on the metrics port, and /readyz while a worker serves. Those files cannot forget a series, so
  the supervisor leaves out those of services and endpoints no running worker serves
  (live_series.py).
- A worker that dies after it served is started again, after a backoff when it keeps dying (the
  counters it wrote are kept, so they never go back); one that dies before it ever served ends
  the supervisor with an error, rather than a restart loop inside the pod.
- SIGTERM or SIGINT: every worker drains as a single gateway does, then the supervisor exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead

from inferfleet.gateway.config import GatewayConfig
from inferfleet.gateway.live_series import MULTIPROC_ENV, LiveCollector, live_file
from inferfleet.gateway.server import build_metrics_app

log = logging.getLogger("inferfleet.gateway")
T = TypeVar("T")

METRICS_DIR_PREFIX = "inferfleet-gateway-metrics-"
_SPAWN = multiprocessing.get_context("spawn")
RESTART_BACKOFF_MAX_SECONDS = 30.0
STEADY_SECONDS = 60.0
"""A worker that served this long before it died is restarted at once; one that dies sooner
waits 1, 3, 7, 15, then 30 s."""
DRAIN_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerLink:
    """What a worker shares with its supervisor."""

    index: int
    serving: Connection
    """Once its caches are synced and it listens, the worker says so on it, then once a second
    while its loop runs. A pipe, not a shared lock: a worker killed at any moment cannot leave its
    supervisor blocked."""
    supervisor_pid: int
    """The worker stops when its parent is no longer this process."""


@dataclass(frozen=True)
class WorkerSettings:
    event_loop: str = "uvloop"
    log_level: int = logging.INFO


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and never listening: it holds the port
    number (port 0 picks one) while the workers' listeners, bound beside it, take the connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind((host, port))
    except OSError as e:
        reserved.close()
        raise OSError(e.errno, f"cannot bind {host}:{port}: {e.strerror}") from e
    return reserved


def run_worker(config: GatewayConfig, link: WorkerLink, settings: WorkerSettings) -> None:
    """A worker process's entry point (spawned: nothing inherited but its arguments and env)."""
    from inferfleet.gateway.app import serve

    logging.basicConfig(
        level=settings.log_level, format=f"[%(asctime)s] %(levelname)s worker {link.index}: %(message)s"
    )
    run_on(settings.event_loop, serve(config, link))


def run_on(event_loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on a new loop of `--event-loop`'s kind (uvloop or asyncio's own)."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


@dataclass
class Worker:
    process: SpawnProcess
    serving_pipe: Connection
    started_at: float
    serving: bool = False
    heard_at: float = 0.0
    """When it last said it serves (once a second while its loop runs)."""


@dataclass
class Supervisor:
    config: GatewayConfig
    settings: WorkerSettings
    metrics_dir: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    all_exited: asyncio.Event = field(default_factory=asyncio.Event)
    workers: dict[int, Worker] = field(default_factory=dict)
    quick_deaths: dict[int, int] = field(default_factory=dict)
    failure: str = ""

    def start_worker(self, index: int) -> None:
        reader, writer = _SPAWN.Pipe(duplex=False)
        link = WorkerLink(index, writer, os.getpid())
        process = _SPAWN.Process(
            target=run_worker, args=(self.config, link, self.settings), name=f"gateway-worker-{index}"
        )
        process.start()
        writer.close()  # the worker holds the other end: its exit ends the pipe
        self.workers[index] = Worker(process, reader, time.monotonic())
        loop = asyncio.get_running_loop()
        loop.add_reader(reader.fileno(), self._reported, index)
        loop.add_reader(process.sentinel, self._exited, index)

    def running_pids(self) -> list[int]:
        alive = (w.process for w in self.workers.values() if w.process.is_alive())
        return [p.pid for p in alive if p.pid is not None]

    def ready(self) -> bool:
        """A worker serves: it listens only once synced, so the pod may take requests."""
        return any(w.serving and w.process.is_alive() for w in self.workers.values())

    def _reported(self, index: int) -> None:
        worker = self.workers[index]
        try:
            worker.serving_pipe.recv_bytes()
        except (EOFError, OSError):  # the worker is gone: _exited handles it
            asyncio.get_running_loop().remove_reader(worker.serving_pipe.fileno())
            return
        worker.heard_at = time.monotonic()
        if not worker.serving:
            worker.serving = True
            log.info("gateway worker %d (pid %s) serving", index, worker.process.pid)

    def kill_silent(self) -> None:
        """Kill each serving worker silent past the timeout (its loop is stuck: the connections the
        kernel hands it would hang); it is started again like any dead worker. Runs every second."""
        loop = asyncio.get_running_loop()
        if self.stop.is_set():
            return
        limit = self.config.worker_timeout_seconds
        for index, worker in self.workers.items():
            silent = time.monotonic() - worker.heard_at
            if worker.serving and worker.process.is_alive() and silent > limit:
                log.error(
                    "gateway worker %d (pid %s) silent for %.0fs: killing it",
                    index,
                    worker.process.pid,
                    silent,
                )
                worker.process.kill()
        loop.call_later(1.0, self.kill_silent)

    def _take_late_report(self, index: int) -> None:
        """A report and the exit can come in one turn of the loop: read the report first."""
        worker = self.workers[index]
        if not worker.serving and worker.serving_pipe.poll():
            self._reported(index)

    def _exited(self, index: int) -> None:
        worker = self.workers[index]
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        self._take_late_report(index)
        loop.remove_reader(worker.serving_pipe.fileno())
        worker.serving_pipe.close()
        worker.process.join()
        mark_process_dead(worker.process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        if worker.process.pid is not None:
            live_file(self.metrics_dir, worker.process.pid).unlink(missing_ok=True)
        code = worker.process.exitcode
        if self.stop.is_set():
            if not any(w.process.is_alive() for w in self.workers.values()):
                self.all_exited.set()
        elif not worker.serving:
            self._fail(f"gateway worker {index} exited with code {code} before it was ready")
        else:
            delay = self._restart_delay(index, worker)
            log.warning("gateway worker %d exited with code %s; starting it again in %gs", index, code, delay)
            loop.call_later(delay, self._restart, index)

    def _restart_delay(self, index: int, worker: Worker) -> float:
        if time.monotonic() - worker.started_at >= STEADY_SECONDS:
            self.quick_deaths[index] = 0
            return 0.0
        deaths = self.quick_deaths[index] = self.quick_deaths.get(index, 0) + 1
        return min(RESTART_BACKOFF_MAX_SECONDS, 2.0**deaths - 1)

    def _restart(self, index: int) -> None:
        if self.stop.is_set():
            return
        try:
            self.start_worker(index)
        except OSError as e:  # no process could be made (memory, pid limit): the pod restarts
            self._fail(f"gateway worker {index} could not be started again: {e}")

    def _fail(self, failure: str) -> None:
        self.failure = failure
        log.error("%s; stopping", failure)
        self.stop.set()

    async def drain(self) -> None:
        """SIGTERM to every worker; wait until each has drained its requests and exited (each has
        `shutdown_seconds`), then kill what is left."""
        self.stop.set()
        alive = [w.process for w in self.workers.values() if w.process.is_alive()]
        if not alive:
            return
        for process in alive:
            process.terminate()
        try:
            await asyncio.wait_for(
                self.all_exited.wait(), self.config.shutdown_seconds + DRAIN_MARGIN_SECONDS
            )
        except TimeoutError:
            self.failure = self.failure or "gateway workers still draining at the deadline were killed"
            for process in alive:
                process.kill()
            await self.all_exited.wait()


def make_metrics_dir() -> str:
    """A fresh directory for the workers' metric files, named by this process; those of supervisors
    no longer running are removed (a /tmp emptyDir outlives a container killed outright)."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and (int(pid) == os.getpid() or not Path(f"/proc/{pid}").exists()):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")


async def supervise(config: GatewayConfig, settings: WorkerSettings) -> int:
    """Run `config.workers` gateway processes until SIGTERM or SIGINT; the exit code."""
    metrics_dir = make_metrics_dir()
    os.environ[MULTIPROC_ENV] = metrics_dir  # before any worker starts: they write their series there
    supervisor = Supervisor(config, settings, metrics_dir)
    registry = CollectorRegistry()
    registry.register(LiveCollector(metrics_dir, supervisor.running_pids))
    runner = web.AppRunner(build_metrics_app(registry, supervisor.ready), access_log=None)
    await runner.setup()
    try:
        reserved = await _bind(config, runner)
    except OSError as e:
        log.error("gateway: %s", e)
        await runner.cleanup()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return 1
    supervisor.config = replace(config, port=reserved.getsockname()[1])
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.stop.set)
    try:
        for index in range(config.workers):
            supervisor.start_worker(index)
        supervisor.kill_silent()
        log.info(
            "gateway: %d workers on %s:%s (metrics on :%s)",
            config.workers, config.host, supervisor.config.port, runner.addresses[0][1],
        )  # fmt: skip
        await supervisor.stop.wait()
        log.info("gateway stopping: the workers finish their requests in flight")
    finally:
        await supervisor.drain()
        await runner.cleanup()
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if supervisor.failure else 0


async def _bind(config: GatewayConfig, runner: web.AppRunner) -> socket.socket:
    """The metrics port (served by the supervisor), then the API port reserved for the workers."""
    await web.TCPSite(runner, config.metrics_address, config.metrics_port).start()
    return reserve_port(config.host, config.port)
