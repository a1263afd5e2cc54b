"""The arms: how each one is started and where the load generator sends its requests (pure)."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

DIRECT, GATEWAY, VLLM_ROUTER, GATEWAY_PROFILED = "direct", "gateway", "vllm-router", "gateway-py-spy"
NGINX = "nginx"
ARMS = (DIRECT, GATEWAY, VLLM_ROUTER, NGINX)
INFERFLEET = [sys.executable, "-m", "inferfleet"]
PY_SPY = Path(sys.executable).parent / "py-spy"
"""The sampling profiler of the `bench` extra, beside this Python."""
PY_SPY_RATE = 200
"""Samples per second: ~4,000 in a 20 s phase, at a cost to the gateway too small to show."""


@dataclass(frozen=True)
class Ports:
    api: int
    metrics: int


@dataclass(frozen=True)
class Arm:
    name: str
    targets: list[str]
    """Base URLs the load generator spreads its streams over."""
    command: list[str] = field(default_factory=list)
    """The proxy's argv; empty for the direct arm (no proxy)."""
    ready_url: str = ""
    stop_signal: int = signal.SIGTERM


def engine_command(
    model: str, port: int, max_concurrent: int, tokens_per_second: float, step_phase: float | None = None
) -> list[str]:
    phase = [] if step_phase is None else ["--step-phase", f"{step_phase:g}"]
    return [*INFERFLEET, "sim-engine", "--model", model, "--host", "127.0.0.1", "--port", str(port),
            "--max-concurrent", str(max_concurrent), "--tokens-per-second", f"{tokens_per_second:g}",
            "--drain-seconds", "2", *phase]  # fmt: skip


def direct_arm(engine_urls: list[str]) -> Arm:
    """Stream k goes straight to engine k mod n: the even spread a router should match."""
    return Arm(DIRECT, targets=list(engine_urls))


def gateway_arm(
    model: str,
    engine_urls: list[str],
    ports: Ports,
    slots: int,
    profile: Path | None = None,
    workers: int = 1,
) -> Arm:
    """`inferfleet gateway` with static endpoints and `workers` processes; when `profile` is given,
    started by py-spy, which samples its stacks (every worker's) from outside the process (so it runs
    at full speed, and time in a system call counts for the Python line that made it) and writes
    them to `profile` when stopped by SIGINT."""
    launcher = INFERFLEET
    if profile is not None:
        launcher = [str(PY_SPY), "record", "--format", "raw", "--rate", str(PY_SPY_RATE),
                    "--subprocesses", "--output", str(profile), "--", *INFERFLEET]  # fmt: skip
    command = [*launcher, "gateway", "--static-endpoints", f"{model}={','.join(engine_urls)}",
               "--static-slots", str(slots), "--host", "127.0.0.1", "--port", str(ports.api),
               "--metrics-address", "127.0.0.1", "--metrics-port", str(ports.metrics),
               "--workers", str(workers)]  # fmt: skip
    return Arm(
        GATEWAY_PROFILED if profile is not None else GATEWAY,
        targets=[f"http://127.0.0.1:{ports.api}"],
        command=command,
        ready_url=f"http://127.0.0.1:{ports.metrics}/readyz",
        stop_signal=signal.SIGINT if profile is not None else signal.SIGTERM,
    )


def vllm_router_arm(executable: Path, engine_urls: list[str], ports: Ports, policy: str) -> Arm:
    """vllm-router with the engines as static workers. Its own rate limit and queue are left at their
    defaults (32768 concurrent), far above any level here."""
    command = [str(executable), "--host", "127.0.0.1", "--port", str(ports.api),
               "--worker-urls", *engine_urls, "--policy", policy,
               "--prometheus-host", "127.0.0.1", "--prometheus-port", str(ports.metrics),
               "--log-level", "warning"]  # fmt: skip
    return Arm(
        VLLM_ROUTER,
        targets=[f"http://127.0.0.1:{ports.api}"],
        command=command,
        ready_url=f"http://127.0.0.1:{ports.api}/health",
    )
