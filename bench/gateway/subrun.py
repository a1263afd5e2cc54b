"""One streamed run of `python -m bench.gateway` in a child process, for the tools that sweep it
(`bench.gateway.rates`, `bench.gateway.cost_split`): each run gets a fresh process, as a user's
would."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_streamed_report(
    streams: int,
    tokens_per_second: float,
    arms: str,
    duration: float,
    no_install: bool,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The JSON report of one streamed run at this many streams and this token rate."""
    command = [sys.executable, "-m", "bench.gateway", "--json", "--modes", "streamed",
               "--levels", str(streams), "--tokens-per-second", f"{tokens_per_second:g}",
               *(["--max-tokens", str(max_tokens)] if max_tokens is not None else []),
               "--arms", arms, "--duration", f"{duration:g}",
               *(["--no-install"] if no_install else [])]  # fmt: skip
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1):  # 1: the run finished, some requests failed (its table says)
        raise SystemExit(f"python -m bench.gateway exited with {done.returncode}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report
