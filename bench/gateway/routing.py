"""`python -m bench.gateway.routing`: routing quality on a shared-prefix workload, every arm in one run.

Each arm replays the same Mooncake conversation window (bench.gateway.prefix_workload) open-loop
through one router onto fresh sim engines (cold prefix caches), and is measured by TTFT (first
streamed byte) and the engines' prefix-cache hit rate (their vllm:prefix_cache_* counters scraped
before and after). The arms: round-robin (vllm-router `--policy round_robin`; client-side
round-robin when vllm-router is not installed), the gateway's least-load and prefix-affinity, and
vllm-router's prefix-aware `cache_aware` policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.gateway import vllm_router
from bench.gateway.arms import Arm, Ports, direct_arm, engine_command, gateway_arm, vllm_router_arm
from bench.gateway.cli import source_version, write_report
from bench.gateway.cpu import process_cpu_seconds
from bench.gateway.prefix_workload import (
    WorkItem,
    build_workload,
    census_json,
    compute_cache_model,
    compute_hit_rate,
    compute_routing_census,
    compute_spread,
    read_by_label,
    read_counters,
    write_workload,
)
from bench.gateway.procs import Process
from bench.gateway.replay import PROMPT_FORMS
from bench.gateway.routing_report import (
    ARMS,
    CACHE_AWARE,
    LEAST_LOAD,
    PREFIX_AFFINITY,
    ROUND_ROBIN,
    arm_figures,
    table,
    targets,
)
from inferfleet.gateway.config import GatewayConfig
from inferfleet.gateway.prefix_index import PrefixIndex
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.ports import free_ports
from inferfleet.planning.prefix_routing import LoadBound, pick_endpoint_by_match, prefix_blocks
from inferfleet.sim.traces import load_mooncake

MODEL = "bench-model"
PROXIES = {
    ROUND_ROBIN: "vllm-router round_robin",
    LEAST_LOAD: "gateway least-load",
    PREFIX_AFFINITY: "gateway prefix-affinity",
    CACHE_AWARE: "vllm-router cache_aware",
}
TRACE = Path("traces/mooncake-2025-conversation.jsonl.gz")
REAL_SCALE_REQUESTS = 1000
"""Requests of the census at one word per token: their prompts are ~12k words each."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway.routing", description=__doc__)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"of {', '.join(ARMS)}")
    ap.add_argument("--trace", type=Path, default=TRACE, help="a Mooncake-format JSONL(.gz) trace")
    ap.add_argument("--start", type=float, default=0.0, help="trace seconds skipped (default 0)")
    ap.add_argument("--length", type=float, default=3600.0, help="trace seconds replayed (default 3600)")
    ap.add_argument("--compression", type=float, default=30.0, help="replay this many times faster (30)")
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--slots", type=int, default=256, help="per engine, and the gateway's per endpoint")
    ap.add_argument("--words-per-block", type=int, default=16, help="words standing for 512 trace tokens")
    ap.add_argument(
        "--prompts",
        choices=PROMPT_FORMS,
        default="tokens",
        help="send prompts as token ids (default; vllm-router's cache_aware routes only on those) or text",
    )
    ap.add_argument("--cache-blocks", type=int, default=4000, help="per engine prefix-cache blocks")
    ap.add_argument("--prefill-words-per-second", type=float, default=1000.0, help="uncached prefill rate")
    ap.add_argument("--tokens-per-second", type=float, default=100.0, help="decode rate per request")
    ap.add_argument("--max-output-tokens", type=int, default=32)
    ap.add_argument("--prefix-load-bound", type=float, default=GatewayConfig.prefix_load_bound)
    ap.add_argument("--prefix-load-slack", type=int, default=GatewayConfig.prefix_load_slack)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    ap.add_argument("--no-install", action="store_true", help="skip vllm-router unless already installed")
    ap.add_argument("--quick", action="store_true", help="5 trace minutes at 10x: 30 s per arm")
    ap.add_argument(
        "--workdir", type=Path, help="logs and records (default .cache/bench-gateway/<time>-routing)"
    )
    ap.add_argument("--save", action="store_true", help="also write results/<date>-routing.json/.txt")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if args.quick:
        args.length, args.compression = 300.0, 10.0
    args.arms = [a for a in ARMS if a in args.arms.split(",")]
    return args


def router_executable(args: argparse.Namespace) -> tuple[Path | None, str]:
    """vllm-router's launcher (installed first unless --no-install), or None and why not."""
    try:
        version = vllm_router.pinned_version()
        exe = vllm_router.executable(version)
        if args.no_install and not exe.is_file():
            return None, f"vllm-router {version} not installed ({exe}) and --no-install"
        return vllm_router.install(version), version
    except Exception as e:  # the other arms still run; the report says why this one did not
        return None, f"vllm-router install failed: {e!r}"


def build_arm(name: str, args: argparse.Namespace, urls: list[str], router: Path | None) -> Arm | None:
    """The arm's proxy on these engines; None when it cannot run here."""
    ports = Ports(*free_ports(2))
    if name in (LEAST_LOAD, PREFIX_AFFINITY):
        arm = gateway_arm(MODEL, urls, ports, args.slots)
        extra = ["--routing", name]
        if name == PREFIX_AFFINITY:
            extra += [
                "--prefix-load-bound",
                f"{args.prefix_load_bound:g}",
                "--prefix-load-slack",
                str(args.prefix_load_slack),
            ]
        return dataclasses.replace(arm, name=name, command=[*arm.command, *extra])
    if name == ROUND_ROBIN and router is None:
        return dataclasses.replace(direct_arm(urls), name=ROUND_ROBIN)  # client-side round-robin
    if router is None:
        return None
    policy = "round_robin" if name == ROUND_ROBIN else "cache_aware"
    return dataclasses.replace(vllm_router_arm(router, urls, ports, policy), name=name)


def start_engines(args: argparse.Namespace, stack: ExitStack, workdir: Path, arm: str) -> list[Process]:
    engines = []
    for i, port in enumerate(free_ports(args.engines)):
        command = [
            *engine_command(MODEL, port, args.slots, args.tokens_per_second),
            "--block-tokens", str(args.words_per_block), "--cache-blocks", str(args.cache_blocks),
            "--prefill-tokens-per-second", f"{args.prefill_words_per_second:g}",
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/health"
        engine = Process(f"{arm}-engine-{i}", command, health, workdir / f"{arm}-engine-{i}.log").start()
        stack.callback(engine.stop)
        engines.append(engine)
    return engines


def scrape(engines: list[Process]) -> list[dict[str, float]]:
    counters = []
    for engine in engines:
        url = engine.ready_url.removesuffix("/health") + "/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            counters.append(read_counters(r.read().decode()))
    return counters


def replay_command(args: argparse.Namespace, targets_: list[str], workload: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "bench.gateway.replay", "--workload", str(workload), "--model", MODEL,
               "--words-per-block", str(args.words_per_block), "--timeout", f"{args.timeout:g}",
               "--prompts", args.prompts, "--out", str(out)]  # fmt: skip
    for url in targets_:
        command += ["--url", url]
    return command


def run_arm(
    name: str, args: argparse.Namespace, router: Path | None, workload: Path, span: float, workdir: Path
) -> dict[str, Any]:
    """Fresh engines and a fresh proxy, the replay, the counters around it; all stopped after."""
    with ExitStack() as stack:
        engines = start_engines(args, stack, workdir, name)
        urls = [e.ready_url.removesuffix("/health") for e in engines]
        arm = build_arm(name, args, urls, router)
        if arm is None:
            return {"arm": name, "ran": False, "reason": "vllm-router is not available"}
        pid = None
        if arm.command:
            proxy = Process(name, arm.command, arm.ready_url, workdir / f"{name}.log", arm.stop_signal)
            pid = proxy.start().pid
            stack.callback(proxy.stop)
        before, cpu_before = scrape(engines), process_cpu_seconds([pid]) if pid else 0.0
        out = workdir / f"records-{name}.json"
        subprocess.run(replay_command(args, arm.targets, workload, out), check=True,
                       timeout=span + args.timeout + 120)  # fmt: skip
        after, cpu_after = scrape(engines), process_cpu_seconds([pid]) if pid else 0.0
        decisions = router_decisions(arm)
    data = json.loads(out.read_text())
    figures = arm_figures(data, compute_hit_rate(before, after), compute_spread(before, after))
    proxy_cpu = round(cpu_after - cpu_before, 2) if pid else None
    extra = {"proxy_cpu_s": proxy_cpu} | ({"router_decisions": decisions} if decisions else {})
    return (
        {"arm": name, "ran": True, "proxy": PROXIES[name] if arm.command else "client-side"} | figures | extra
    )


def router_decisions(arm: Arm) -> dict[str, float]:
    """vllm-router's prefix-routing decisions by outcome, from its own /metrics (other proxies: {})."""
    if "--prometheus-port" not in arm.command:
        return {}
    port = arm.command[arm.command.index("--prometheus-port") + 1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return read_by_label(r.read().decode(), "vllm_router_prefix_routing_decisions_total", "outcome")


def say(message: str) -> None:
    print(f"[bench.gateway.routing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    trace = args.trace if args.trace.is_absolute() else repo_root() / args.trace
    items = build_workload(load_mooncake(trace), args.start, args.length, args.compression,
                           args.words_per_block, args.max_output_tokens)  # fmt: skip
    workload = workdir / "workload.jsonl"
    write_workload(items, workload)
    span = items[-1].at if items else 0.0
    router, router_note = (
        router_executable(args) if ROUND_ROBIN in args.arms or CACHE_AWARE in args.arms else (None, "")
    )
    arms = []
    for name in args.arms:
        say(f"{name}: {len(items)} requests over {span:.0f} s")
        arms.append(run_arm(name, args, router, workload, span, workdir))
    report: dict[str, Any] = {"params": params(args, len(items), span, router_note), "arms": arms}
    report["routing_census"] = routing_census(items, args)
    report["cache_model"] = cache_model(items, args)
    report["targets"] = targets(arms)
    return report


Route = Callable[[Mapping[str, int], tuple[int, ...]], str]
"""(requests in flight per endpoint, the prompt's gateway blocks) -> the endpoint it goes to."""


def least_loaded(in_flight: Mapping[str, int]) -> str:
    return min(in_flight, key=lambda e: (in_flight[e], e))


def build_prefix_affinity_route(endpoints: Sequence[str], bound: LoadBound, slots: int = 256) -> Route:
    """The gateway's prefix affinity as a Route: its block index and pick, least load when it picks
    none."""
    index = PrefixIndex()

    def route(in_flight: Mapping[str, int], blocks: tuple[int, ...]) -> str:
        match = index.match(blocks, endpoints)
        picked = pick_endpoint_by_match(in_flight, slots, (), blocks, match.held, match.shared, bound)
        endpoint = picked or least_loaded(in_flight)
        index.record(blocks, endpoint)
        return endpoint

    return route


def build_census_router(engines: int) -> Callable[[str], str | None]:
    """The gateway's prefix affinity over `engines` idle endpoints: its block index and pick,
    without load or time (least load among idle endpoints is the first)."""
    endpoints = [f"engine-{i}" for i in range(engines)]
    idle = dict.fromkeys(endpoints, 0)
    route = build_prefix_affinity_route(endpoints, LoadBound(0.25, slack=0), slots=1)
    return lambda prompt: route(idle, prefix_blocks({"prompt": prompt}, chat=False))


def routing_census(items: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Where the gateway's prefix affinity sends this workload at the bench's scale, and at one
    word per token (512 words per trace block) on the first REAL_SCALE_REQUESTS requests."""
    w = args.words_per_block
    real = [dataclasses.replace(i, words=i.words * 512 // w) for i in items[:REAL_SCALE_REQUESTS]]
    return {
        f"{words} words per block": census_json(
            compute_routing_census(subset, words, build_census_router(args.engines))
        )
        for words, subset in ((w, items), (512, real))
    }


def cache_model(items: list[WorkItem], args: argparse.Namespace) -> dict[str, Any]:
    """The same requests through LRU caches without engines or time: round-robin, perfect session
    affinity (a session: the first two blocks), and one pooled cache of every engine's blocks (no
    block held twice: about the most any routing could reuse)."""
    n: int = args.engines
    blocks: int = args.cache_blocks
    w: int = args.words_per_block

    def session(i: int, item: WorkItem) -> int:
        return zlib.crc32(repr(item.blocks[:2]).encode()) % n

    routings = {
        "round-robin": (lambda i, item: i % n, n, blocks),
        "session affinity": (session, n, blocks),
        "one pooled cache": (lambda i, item: 0, 1, n * blocks),
    }
    return {name: dataclasses.asdict(compute_cache_model(items, assign, caches, size, w))
            for name, (assign, caches, size) in routings.items()}  # fmt: skip


def params(args: argparse.Namespace, requests: int, span: float, router_note: str) -> dict[str, Any]:
    keys = ("trace", "start", "length", "compression", "engines", "slots", "words_per_block", "prompts",
            "cache_blocks", "prefill_words_per_second", "tokens_per_second", "max_output_tokens",
            "prefix_load_bound", "prefix_load_slack", "timeout", "quick")  # fmt: skip
    return {k: str(v) if isinstance(v, Path) else v for k, v in ((k, getattr(args, k)) for k in keys)} | {
        "requests": requests,
        "replay_seconds": round(span, 1),
        "vllm_router": router_note,
        "commit": source_version(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or cache_dir() / "bench-gateway" / (time.strftime("%Y%m%d-%H%M%S") + "-routing")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = run(args, workdir)
    report["params"]["wall_seconds"] = round(time.monotonic() - started, 1)
    text = table(report)
    write_report(report, text, workdir, "routing" if args.save else None)
    print(json.dumps(report, indent=2) if args.json else text)
    say(f"report: {workdir / 'report.json'}")
    return 0 if all(a.get("errors", 0) == 0 for a in report["arms"] if a["ran"]) else 1


if __name__ == "__main__":
    sys.exit(main())
