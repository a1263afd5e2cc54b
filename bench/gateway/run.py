"""One phase: one arm at one level of concurrent streams, streamed or not, measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gateway.cpu import machine_times, process_cpu_seconds
from bench.gateway.stats import Record, count_errors, cpu_per_1k_chunks, summarize, window_chunk_rate

NON_STREAMED, STREAMED = "non-streamed", "streamed"
MODES = (NON_STREAMED, STREAMED)


@dataclass(frozen=True)
class Load:
    model: str
    streams: int
    streamed: bool
    warmup: float
    duration: float
    max_tokens: int
    tokens_per_second: float
    prompt_words: int
    timeout: float
    seed: int

    @property
    def mode(self) -> str:
        return STREAMED if self.streamed else NON_STREAMED


def loadgen_command(load: Load, targets: list[str], out: Path) -> list[str]:
    # streams start spread over one request's generation time, so they do not move in lockstep;
    # each request is preceded by a pause of up to one decode step (why: loadgen's docstring)
    stagger = load.max_tokens / load.tokens_per_second
    command = [sys.executable, "-m", "bench.gateway.loadgen", "--model", load.model,
               "--streams", str(load.streams), "--warmup", f"{load.warmup:g}",
               "--duration", f"{load.duration:g}", "--stagger", f"{stagger:g}",
               "--jitter", f"{1 / load.tokens_per_second:g}",
               "--max-tokens", str(load.max_tokens), "--prompt-words", str(load.prompt_words),
               "--timeout", f"{load.timeout:g}", "--seed", str(load.seed), "--out", str(out)]  # fmt: skip
    command += ["--stream"] if load.streamed else []
    for url in targets:
        command += ["--url", url]
    return command


def phase_figures(
    data: dict[str, Any], proxy_cpu: float | None, engines_cpu: float, machine: tuple[float, float]
) -> dict[str, Any]:
    """The phase's figures from the load generator's output and the CPU read around it."""
    records = [Record(*r) for r in data["records"]]
    summary = summarize(records, (data["window"][0], data["window"][1]))
    busy, total = machine
    cores = os.cpu_count() or 1
    wall, (start, end) = data["wall_seconds"], data["window"]
    return summary.to_json() | {
        "errors_by_kind": count_errors(r for r in records if start <= r.start < end),
        "requests_sent": len(records),  # warm-up and tail too, as the CPU and chunk counts
        "window_chunks_per_s": round(window_chunk_rate(records, (start, end)), 1),
        "proxy_cpu_s": None if proxy_cpu is None else round(proxy_cpu, 3),
        "proxy_cpu_per_1k_chunks_s": cpu_per_1k_chunks(proxy_cpu, summary.chunks),
        "engines_cpu_s": round(engines_cpu, 3),
        "loadgen_cpu_s": data["cpu_seconds"],
        "loadgen_machine_share": round(data["cpu_seconds"] / (wall * cores), 3) if wall > 0 else None,
        "machine_busy_share": round(busy / total, 3) if total > 0 else None,
        "wall_s": wall,
    }


def run_phase(
    arm: str, targets: list[str], proxy_pid: int | None, engine_pids: list[int], load: Load, workdir: Path
) -> dict[str, Any]:
    """Run the load generator once against `targets`, with CPU read before and after."""
    out = workdir / f"records-{arm}-{load.streams}-{load.mode}.json"
    proxy_before = None if proxy_pid is None else process_cpu_seconds([proxy_pid])
    engines_before, machine_before = process_cpu_seconds(engine_pids), machine_times()
    subprocess.run(
        loadgen_command(load, targets, out),
        check=True,
        timeout=load.warmup + load.duration + load.timeout + 60,
    )
    machine_after = machine_times()
    proxy_cpu = None if proxy_pid is None else process_cpu_seconds([proxy_pid]) - (proxy_before or 0.0)
    engines_cpu = process_cpu_seconds(engine_pids) - engines_before
    machine = (machine_after.busy - machine_before.busy, machine_after.total - machine_before.total)
    figures = phase_figures(json.loads(out.read_text()), proxy_cpu, engines_cpu, machine)
    return {"arm": arm, "streams": load.streams, "mode": load.mode} | figures
