"""`inferfleet gateway --workers N`: N gateway processes sharing one API port, one /metrics.

One asyncio process relays a streamed chunk in ~15 µs of CPU, and a burst of chunks from the
engines queues behind one core: at 1,000 streams a second worker cuts the added p99 TTFT several
fold on 2 cores (bench/gateway/README.md). So a pod may run several.

- The kernel spreads new connections over the workers' listeners (SO_REUSEPORT). The supervisor
  binds the port first without listening, so port 0 names one port for all of them, and no
  connection ever waits on the supervisor.
- Each worker is a whole gateway: its own discovery, pools and slots (slots and the queue bound
  count per worker, as they count per gateway replica).
- Their metrics meet in prometheus_client's multiprocess files; the supervisor serves them summed
  on the metrics port, and /readyz once every worker has synced its caches.
- A worker that dies after it was ready is started again (the counters it wrote are kept, so
  they never go back); one that dies before it was ready ends the supervisor with an error,
  rather than a restart loop inside the pod.
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
from dataclasses import dataclass, field, replace
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from inferfleet.gateway.config import GatewayConfig
from inferfleet.gateway.server import build_metrics_app

log = logging.getLogger("inferfleet.gateway")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class WorkerLink:
    """What a worker shares with its supervisor."""

    index: int
    ready: ProcessEvent
    """Set once the worker's caches are synced and it listens."""
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
    except OSError:
        reserved.close()
        raise
    return reserved


def run_worker(config: GatewayConfig, link: WorkerLink, settings: WorkerSettings) -> None:
    """A worker process's entry point (spawned: nothing inherited but its arguments and env)."""
    from inferfleet.gateway.app import serve

    logging.basicConfig(
        level=settings.log_level, format=f"[%(asctime)s] %(levelname)s worker {link.index}: %(message)s"
    )
    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.run(serve(config, link))
    else:
        asyncio.run(serve(config, link))


@dataclass
class Worker:
    process: SpawnProcess
    ready: ProcessEvent


@dataclass
class Supervisor:
    config: GatewayConfig
    settings: WorkerSettings
    metrics_dir: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    all_exited: asyncio.Event = field(default_factory=asyncio.Event)
    workers: dict[int, Worker] = field(default_factory=dict)
    failure: str = ""

    def start_worker(self, index: int) -> None:
        ready = _SPAWN.Event()
        link = WorkerLink(index, ready, os.getpid())
        process = _SPAWN.Process(
            target=run_worker, args=(self.config, link, self.settings), name=f"gateway-worker-{index}"
        )
        process.start()
        self.workers[index] = Worker(process, ready)
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, index)

    def ready(self) -> bool:
        workers = self.workers.values()
        return len(workers) == self.config.workers and all(
            w.process.is_alive() and w.ready.is_set() for w in workers
        )

    def _exited(self, index: int) -> None:
        worker = self.workers[index]
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        worker.process.join()
        mark_process_dead(worker.process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        code = worker.process.exitcode
        if self.stop.is_set():
            if not any(w.process.is_alive() for w in self.workers.values()):
                self.all_exited.set()
        elif not worker.ready.is_set():
            self.failure = f"gateway worker {index} exited with code {code} before it was ready"
            log.error("%s; stopping", self.failure)
            self.stop.set()
        else:
            log.warning("gateway worker %d exited with code %s; starting it again", index, code)
            self.start_worker(index)

    async def drain(self) -> None:
        """SIGTERM to every worker; wait until each has drained its requests and exited."""
        self.stop.set()
        alive = [w.process for w in self.workers.values() if w.process.is_alive()]
        if not alive:
            return
        for process in alive:
            process.terminate()
        try:
            await asyncio.wait_for(self.all_exited.wait(), self.config.shutdown_seconds + 10)
        except TimeoutError:
            for process in alive:
                process.kill()
            await self.all_exited.wait()


async def supervise(config: GatewayConfig, settings: WorkerSettings) -> int:
    """Run `config.workers` gateway processes until SIGTERM or SIGINT; the exit code."""
    try:
        reserved = reserve_port(config.host, config.port)
    except OSError as e:
        log.error("gateway: cannot bind %s:%s: %s", config.host, config.port, e)
        return 1
    metrics_dir = tempfile.mkdtemp(prefix="inferfleet-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir  # before any worker starts: they write their series there
    worker_config = replace(config, port=reserved.getsockname()[1])
    supervisor = Supervisor(worker_config, settings, metrics_dir)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, supervisor.stop.set)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    runner = web.AppRunner(build_metrics_app(registry, supervisor.ready), access_log=None)
    try:
        for index in range(config.workers):
            supervisor.start_worker(index)
        await runner.setup()
        await web.TCPSite(runner, config.metrics_address, config.metrics_port).start()
        log.info(
            "gateway: %d workers on %s:%s (metrics on :%s)",
            config.workers, config.host, worker_config.port, runner.addresses[0][1],
        )  # fmt: skip
        await supervisor.stop.wait()
        log.info("gateway stopping: the workers finish their requests in flight")
    finally:
        await supervisor.drain()
        await runner.cleanup()
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if supervisor.failure else 0
