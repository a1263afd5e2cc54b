"""Command line: start the engines and every proxy once, then every level, mode and arm in turn."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.gateway import vllm_router
from bench.gateway.arms import (
    ARMS,
    DIRECT,
    GATEWAY,
    GATEWAY_PROFILED,
    INFERFLEET,
    NGINX,
    PY_SPY,
    VLLM_ROUTER,
    Arm,
    Ports,
    direct_arm,
    engine_command,
    gateway_arm,
    vllm_router_arm,
)
from bench.gateway.nginx import find_nginx, nginx_arm
from bench.gateway.procs import Process, has_command, streams
from bench.gateway.report import table, targets, with_added
from bench.gateway.run import MODES, STREAMED, Load, run_phase
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.ports import free_ports

MODEL = "bench-model"
PROFILE_FILE = "gateway.py-spy.txt"
SPREAD, FIRST_REQUEST = "spread", "first-request"
ENGINE_CLOCKS = (SPREAD, FIRST_REQUEST)
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description="Added latency, added TTFT and CPU per streamed chunk of inferfleet's gateway and of "
        "vllm-router, against direct connections to the same sim engines, in one run.",
    )
    ap.add_argument("--levels", default="1,100,1000", help="concurrent streams, comma-separated")
    ap.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}")
    ap.add_argument("--engines", type=int, default=4, help="sim engine processes (default 4)")
    ap.add_argument("--tokens-per-second", type=float, default=50.0, help="per stream (default 50)")
    ap.add_argument("--max-tokens", type=int, default=50, help="tokens per request (default 50: 1 s)")
    ap.add_argument("--prompt-words", type=int, default=32)
    ap.add_argument(
        "--engine-clocks",
        choices=ENGINE_CLOCKS,
        default=SPREAD,
        help="spread: engine k of n ticks at phase k/n of each decode step, as independent servers do; "
        "first-request: each clock starts at its engine's first request (all about at once)",
    )
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds not measured per phase")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--gateway-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="gateway processes (default: one per CPU, as vllm-router runs one thread per CPU)",
    )
    ap.add_argument("--vllm-router-policy", default="round_robin", help="e.g. round_robin, power_of_two")
    ap.add_argument("--no-install", action="store_true", help="skip vllm-router unless already installed")
    ap.add_argument("--profile", action="store_true", help="also run a gateway under py-spy (own arm)")
    ap.add_argument("--quick", action="store_true", help="levels 1,10, 3 s phases, 10 tokens: < 1 min")
    ap.add_argument("--workdir", type=Path, help="logs and records (default .cache/bench-gateway/<time>)")
    ap.add_argument("--save", action="store_true", help="also write results/<date>-<levels>.json/.txt")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.quick:
        args.levels, args.warmup, args.duration, args.max_tokens = "1,10", 0.5, 2.5, 10
    args.levels = [int(v) for v in args.levels.split(",")]
    args.modes = [m for m in MODES if m in args.modes.split(",")]
    args.arms = [a for a in ARMS if a in args.arms.split(",")]
    return args


def start_engines(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> list[Process]:
    # as many slots as streams: no engine queues, however unevenly an arm spreads the streams
    slots = max(args.levels)
    engines = []
    for i, port in enumerate(free_ports(args.engines)):
        phase = i / args.engines if args.engine_clocks == SPREAD else None
        command = engine_command(MODEL, port, slots, args.tokens_per_second, phase)
        health = f"http://127.0.0.1:{port}/health"
        engine = Process(f"engine-{i}", command, health, workdir / f"engine-{i}.log").start()
        stack.callback(engine.stop)
        engines.append(engine)
    args.engine_slots = slots
    return engines


def plan_arms(args: argparse.Namespace, urls: list[str], workdir: Path) -> tuple[list[Arm], dict[str, Any]]:
    """The arms that can run, and for each selected one whether it runs or why not."""
    arms = [direct_arm(urls)]
    status: dict[str, Any] = {DIRECT: {"ran": True}}
    if GATEWAY in args.arms:
        if has_command([*INFERFLEET, "gateway"]):
            ports, workers = Ports(*free_ports(2)), args.gateway_workers
            arms.append(gateway_arm(MODEL, urls, ports, args.engine_slots, workers=workers))
            if args.profile and PY_SPY.is_file():
                ports, profile = Ports(*free_ports(2)), workdir / PROFILE_FILE
                arms.append(gateway_arm(MODEL, urls, ports, args.engine_slots, profile, workers))
            elif args.profile:
                status[GATEWAY_PROFILED] = {"ran": False, "reason": f"no py-spy at {PY_SPY}: make setup"}
        else:
            status[GATEWAY] = {"ran": False, "reason": "`inferfleet gateway` does not exist in this checkout"}
    if VLLM_ROUTER in args.arms:
        try:
            version = vllm_router.pinned_version()
            exe = vllm_router.executable(version)
            if not (args.no_install and not exe.is_file()):
                exe = vllm_router.install(version)
                arms.append(vllm_router_arm(exe, urls, Ports(*free_ports(2)), args.vllm_router_policy))
                status[VLLM_ROUTER] = {"version": version, "policy": args.vllm_router_policy}
            else:
                status[VLLM_ROUTER] = {"ran": False, "reason": f"not installed ({exe}) and --no-install"}
        except Exception as e:  # the other arms still run; the table says why this one did not
            status[VLLM_ROUTER] = {"ran": False, "reason": f"install failed: {e!r}"}
    if NGINX in args.arms:
        executable = find_nginx()
        if executable is None:
            status[NGINX] = {"ran": False, "reason": "no nginx on PATH (Debian: apt-get install nginx-light)"}
        else:
            arms.append(nginx_arm(executable, urls, Ports(*free_ports(2)), workdir))
    return arms, status


def start_proxies(
    arms: list[Arm], status: dict[str, Any], stack: ExitStack, workdir: Path
) -> dict[str, int | None]:
    """Start each proxy; returns arm → proxy pid (None for direct) of the arms that started."""
    pids: dict[str, int | None] = {}
    for arm in arms:
        if not arm.command:
            pids[arm.name] = None
            continue
        proxy = Process(arm.name, arm.command, arm.ready_url, workdir / f"{arm.name}.log", arm.stop_signal)
        try:
            pids[arm.name] = proxy.start().pid
            stack.callback(proxy.stop)
            status[arm.name] = status.get(arm.name, {}) | {"ran": True}
        except RuntimeError as e:
            status[arm.name] = status.get(arm.name, {}) | {"ran": False, "reason": str(e)}
    return pids


def run_phases(
    args: argparse.Namespace, arms: list[Arm], pids: dict[str, int | None], engines: list[Process],
    workdir: Path,
) -> list[dict[str, Any]]:  # fmt: skip
    phases = []
    engine_pids = [e.pid for e in engines]
    for streams_n in args.levels:
        for mode in args.modes:
            load = Load(MODEL, streams_n, mode == STREAMED, args.warmup, args.duration, args.max_tokens,
                        args.tokens_per_second, args.prompt_words, args.timeout, args.seed)  # fmt: skip
            for arm in (a for a in arms if a.name in pids):
                say(f"{arm.name}: {streams_n} streams, {mode}")
                phases.append(run_phase(arm.name, arm.targets, pids[arm.name], engine_pids, load, workdir))
    return phases


def profile_summary(path: Path, top: int = 25) -> str:
    if not path.is_file():
        return f"no profile written at {path} (py-spy did not stop through SIGINT cleanly)"
    own, inclusive, total = summarize_samples(path.read_text())
    if total == 0:
        return f"no samples in {path}"
    return profile_summary_text(own, inclusive, total, path, top)


def profile_summary_text(own: Counter[str], inclusive: Counter[str], total: int, path: Path, top: int) -> str:
    lines = [f"gateway under py-spy, {total} samples of its busy time ({path});",
             "own: the line on top of the stack (a call into C or the kernel, a socket's send say, counts",
             "for the line that made it); in: anywhere on the stack"]  # fmt: skip
    lines += [f"{'own':>7}  {'in':>7}  function (file:line)"]
    for frame, count in own.most_common(top):
        lines.append(f"{count / total:7.1%}  {inclusive[frame] / total:7.1%}  {frame}")
    return "\n".join(lines)


def summarize_samples(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw (folded) output, `frame;frame;...;frame count` per line, as samples per frame on
    top of the stack (own), per frame anywhere on it (inclusive, once per sample), and in all."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own, inclusive, total


def say(message: str) -> None:
    print(f"[bench.gateway {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    notes: list[str] = []
    with ExitStack() as stack:
        engines = start_engines(args, stack, workdir)
        urls = [e.ready_url.removesuffix("/health") for e in engines]
        if STREAMED in args.modes and not streams(urls[0], MODEL):
            args.modes = [m for m in args.modes if m != STREAMED]
            notes.append("the sim engine does not stream yet: streamed phases skipped")
        arms, status = plan_arms(args, urls, workdir)
        pids = start_proxies(arms, status, stack, workdir)
        phases = run_phases(args, arms, pids, engines, workdir)
    phases = with_added(phases)
    report: dict[str, Any] = {"params": params(args), "arms": status, "phases": phases, "notes": notes}
    report["targets"] = targets(phases)
    if args.profile:
        report["profile"] = profile_summary(workdir / PROFILE_FILE)
    return report


def params(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("levels", "modes", "engines", "engine_slots", "tokens_per_second", "max_tokens", "prompt_words",
            "warmup", "duration", "timeout", "seed", "quick", "gateway_workers", "engine_clocks")  # fmt: skip
    return {k: getattr(args, k, None) for k in keys} | {
        "machine": machine(),
        "commit": source_version(),
    }


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def source_version() -> str:
    """The checkout's commit, "+dirty" when the code the processes run differs from it."""
    git = ["git", "-C", str(repo_root())]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run([*git, "status", "--porcelain", "--", "operator", "bench"], capture_output=True)
    dirty = "+dirty" if status.stdout.strip() else ""
    return commit.stdout.strip() + dirty if commit.returncode == 0 else "unknown"


def write_report(report: dict[str, Any], text: str, workdir: Path, save_as: str | None) -> None:
    """report.json and report.txt in `workdir`; with `save_as`, also results/<date>-<save_as>.*"""
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    (workdir / "report.txt").write_text(text + "\n")
    if save_as is not None:
        stem = f"{time.strftime('%Y-%m-%d')}-{save_as}"
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"{stem}.txt").write_text(text + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or cache_dir() / "bench-gateway" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = run(args, workdir)
    report["params"]["wall_seconds"] = round(time.monotonic() - started, 1)
    text = table(report)
    write_report(report, text, workdir, "-".join(map(str, args.levels)) if args.save else None)
    print(json.dumps(report, indent=2) if args.json else text)
    say(f"report: {workdir / 'report.json'} (repository {repo_root()})")
    return 0 if all(p["errors"] == 0 for p in report["phases"]) else 1
